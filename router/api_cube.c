/* Cube endpoints: create_cube, register_cube, exist_mem_cube_id. */
#include "api.h"

#include "../lib/uuid.h"

#include <string.h>

void api_create_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *name, *owner, *cube_id;
    const json_t *shared;
    if (api_str(body, "cube_name", false, &name, resp) != MG_OK ||
        api_user_id(body, "owner_id", true, &owner, resp) != MG_OK ||
        api_str(body, "cube_id", false, &cube_id, resp) != MG_OK ||
        api_str_list(body, "shared_with", &shared, resp) != MG_OK)
        return;
    char fresh[MG_UUID_STRLEN + 1];
    if (cube_id == NULL || cube_id[0] == '\0') {
        uint8_t id[16];
        mg_uuid_v4(id);
        cube_id = mg_uuid_format(id, fresh);
    }
    if (api_cube_id_check("cube_id", cube_id, resp) != MG_OK)
        return;
    if (name != NULL && strlen(name) > MG_NAME_MAX) {
        api_fail(resp, 422, "field \"cube_name\" is longer than %d bytes", MG_NAME_MAX);
        return;
    }
    if (shared != NULL && json_array_size(shared) > MG_SHARED_MAX) {
        api_fail(resp, 400, "a cube is shared with at most %d users", MG_SHARED_MAX);
        return;
    }
    mg_error err;
    int rc = cube_create(r, cube_id, owner, name ? name : cube_id, shared, &err);
    bool created = rc == MG_OK;
    if (rc == MG_EEXIST) {
        /* Idempotent for its owner, as in MemOS. */
        mg_cube cube;
        rc = cube_get(r, cube_id, &cube, &err);
        if (rc == MG_OK && strcmp(cube.owner_id, owner) != 0) {
            mg_cube_clear(&cube);
            rc = mg_error_set(&err, MG_EEXIST, "cube \"%s\" already exists and belongs to "
                                               "another user",
                              cube_id);
        }
        if (rc == MG_OK) {
            json_t *data = json_pack("{s:s,s:s,s:s,s:b}", "cube_id", cube_id, "cube_name",
                                     cube.name ? cube.name : cube_id, "owner_id", owner,
                                     "created", 0);
            mg_cube_clear(&cube);
            api_ok(resp, "Cube already exists", data);
            return;
        }
    }
    if (!created) {
        if (err.code == MG_EINVAL)
            api_fail(resp, 422, "%s", err.msg);
        else
            api_fail_err(resp, &err);
        return;
    }
    api_ok(resp, "Cube created",
           json_pack("{s:s,s:s,s:s,s:b}", "cube_id", cube_id, "cube_name", name ? name : cube_id,
                     "owner_id", owner, "created", 1));
}

void api_register_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *name_or_path, *cube_id, *user;
    if (api_str(body, "mem_cube_name_or_path", true, &name_or_path, resp) != MG_OK ||
        api_str(body, "mem_cube_id", false, &cube_id, resp) != MG_OK ||
        api_user_id(body, "user_id", false, &user, resp) != MG_OK)
        return;
    if (cube_id == NULL || cube_id[0] == '\0') {
        if (!mg_cube_id_valid(name_or_path, strlen(name_or_path))) {
            api_fail(resp, 422,
                     "give \"mem_cube_id\": \"%.64s\" cannot serve as a cube id (memgrid keeps "
                     "cubes in the cluster, not in directories; import a MemOS cube directory "
                     "with `memgrid migrate`)",
                     name_or_path);
            return;
        }
        cube_id = name_or_path;
    }
    if (api_cube_id_check("mem_cube_id", cube_id, resp) != MG_OK)
        return;
    mg_error err;
    mg_cube cube;
    int rc = cube_get(r, cube_id, &cube, &err);
    if (rc == MG_OK) {
        bool ok = user == NULL || mg_cube_allows(&cube, user);
        mg_cube_clear(&cube);
        if (!ok) {
            api_fail(resp, 403, "user \"%s\" may not use cube \"%s\" (ask its owner to share it)",
                     user, cube_id);
            return;
        }
    } else if (rc == MG_ENOTFOUND) {
        if (user == NULL) {
            api_fail(resp, 404, "cube \"%s\" does not exist; give \"user_id\" to create it",
                     cube_id);
            return;
        }
        rc = cube_create(r, cube_id, user, name_or_path, NULL, &err);
        if (rc != MG_OK && rc != MG_EEXIST) {
            api_fail_err(resp, &err);
            return;
        }
    } else {
        api_fail_err(resp, &err);
        return;
    }
    api_ok(resp, "MemCube registered successfully",
           json_pack("{s:s,s:s}", "cube_id", cube_id, "cube_name_or_path", name_or_path));
}

void api_exist_cube(mg_router *r, const mg_api_req *req, mg_api_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body)) {
        api_fail(resp, 422, "the body must be a JSON object");
        return;
    }
    const char *cube_id;
    if (api_str(body, "mem_cube_id", true, &cube_id, resp) != MG_OK)
        return;
    bool exists = false;
    if (mg_cube_id_valid(cube_id, strlen(cube_id))) {
        mg_cube cube;
        mg_error err;
        int rc = cube_get(r, cube_id, &cube, &err);
        if (rc == MG_OK) {
            exists = true;
            mg_cube_clear(&cube);
        } else if (rc != MG_ENOTFOUND) {
            api_fail_err(resp, &err);
            return;
        }
    }
    json_t *data = json_object();
    json_object_set_new(data, cube_id, json_boolean(exists));
    api_ok(resp, "Successfully", data);
}
