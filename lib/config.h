/*
 * Settings from the environment (MEMGRID_* variables). Each reader leaves
 * *out unchanged when the variable is unset (or empty, for numbers), so a
 * caller sets its default first and lets the environment override it.
 */
#ifndef MG_CONFIG_H
#define MG_CONFIG_H

#include "error.h"

#include <stddef.h>
#include <stdint.h>

/* Copies the variable `name` into buf (capacity cap, NUL included).
 * MG_EINVAL, naming the variable, when it does not fit. */
int mg_env_str(const char *name, char *buf, size_t cap, mg_error *err);

/* Parses the variable `name` as a decimal whole number in [min, max].
 * MG_EINVAL, naming the variable and the range, for anything else. */
int mg_env_u32(const char *name, uint32_t min, uint32_t max, uint32_t *out, mg_error *err);

#endif
