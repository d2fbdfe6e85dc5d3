#!/usr/bin/env bash
# A local memgrid cluster on loopback (docs/OPERATIONS.md): 3 nodes, each
# hosting one replica of the meta group 0 (reserved) and of the data groups
# 1-3, and 2 routers.
#
#   deploy/local-cluster.sh start|stop|status
#
# Environment:
#   MEMGRID_CLUSTER_DIR  data, config, logs and pid files (default ./memgrid-cluster)
#   MEMGRID_BASE_PORT    first port (default 7100); the port plan, with B = base:
#                          router R (1, 2)  HTTP on B + R - 1
#                          node N (1..3)    rpc B + 10N, survey B + 10N + 1,
#                                           raft of group G on B + 10N + 2 + G
#                        so the default uses 7100-7101 and 7110-7135.
#   MEMGRID_BIN          the memgrid binary (default ./build/memgrid)
#   MEMGRID_START_TIMEOUT seconds `start` waits for the cluster (default 30)
#
# `start` writes $MEMGRID_CLUSTER_DIR/cluster.json (kept when it exists),
# starts what is not running, waits until every router answers /health and
# a write and a search go through, then prints `router http://127.0.0.1:PORT`
# per router. `stop` signals the processes named in the pid files only
# (SIGTERM, SIGKILL after 10 s). `status` prints each process's state.
set -euo pipefail

DIR=${MEMGRID_CLUSTER_DIR:-./memgrid-cluster}
BASE=${MEMGRID_BASE_PORT:-7100}
BIN=${MEMGRID_BIN:-./build/memgrid}
START_TIMEOUT=${MEMGRID_START_TIMEOUT:-30}
NODES=(1 2 3)
ROUTERS=(1 2)

die() { echo "local-cluster: $*" >&2; exit 1; }

[[ $BASE =~ ^[0-9]+$ ]] && (( BASE >= 1024 && BASE + 40 <= 65535 )) ||
    die "MEMGRID_BASE_PORT=$BASE must be a port in 1024..65495"

router_port() { echo $((BASE + $1 - 1)); }
node_port() { echo $((BASE + 10 * $1 + $2)); }   # $2: 0 rpc, 1 survey, 2 raft base

write_config() {
    local f="$DIR/cluster.json" n sep=""
    [[ -f $f ]] && return 0
    {
        echo '{'
        echo '  "nodes": ['
        for n in "${NODES[@]}"; do
            printf '%s    {"id": %d, "rpc": "tcp://127.0.0.1:%d", "survey": "tcp://127.0.0.1:%d", "raft_host": "127.0.0.1", "raft_port": %d}' \
                "$sep" "$n" "$(node_port "$n" 0)" "$(node_port "$n" 1)" "$(node_port "$n" 2)"
            sep=$',\n'
        done
        printf '\n  ],\n'
        echo '  "groups": ['
        echo '    {"id": 0, "replicas": [1, 2, 3]},'
        echo '    {"id": 1, "replicas": [1, 2, 3]},'
        echo '    {"id": 2, "replicas": [1, 2, 3]},'
        echo '    {"id": 3, "replicas": [1, 2, 3]}'
        echo '  ]'
        echo '}'
    } >"$f.tmp"
    mv "$f.tmp" "$f"
}

# The pid in a pid file when that process is alive and is memgrid, else "".
live_pid() {
    local f="$DIR/$1.pid" pid
    [[ -f $f ]] || return 0
    pid=$(<"$f")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q memgrid; then
        echo "$pid"
    fi
}

launch() {   # name, then the memgrid arguments
    local name=$1
    shift
    if [[ -n $(live_pid "$name") ]]; then
        return 0
    fi
    nohup "$BIN" "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$DIR/$name.pid"
}

logs_hint() {
    local name
    echo "local-cluster: logs:" >&2
    for name in "${NODES[@]/#/node-}" "${ROUTERS[@]/#/router-}"; do
        echo "  $DIR/$name.log" >&2
        tail -n 5 "$DIR/$name.log" 2>/dev/null | sed 's/^/    /' >&2 || true
    done
}

round_trip() {   # a write and a search through router $1
    local url="http://127.0.0.1:$(router_port "$1")" out
    out=$(curl -sf -m 10 -X POST "$url/product/add" -H 'Content-Type: application/json' \
        -d '{"user_id": "local-cluster-check", "messages": [{"role": "user", "content": "the local cluster answers"}]}') || return 1
    grep -q '"code":200' <<<"${out// /}" || return 1
    out=$(curl -sf -m 10 -X POST "$url/product/search" -H 'Content-Type: application/json' \
        -d '{"user_id": "local-cluster-check", "query": "does the local cluster answer"}') || return 1
    grep -q 'the local cluster answers' <<<"$out"
}

cmd_start() {
    [[ -x $BIN ]] || die "$BIN is not an executable (build first: make build, or set MEMGRID_BIN)"
    command -v curl >/dev/null || die "curl is needed to check that the cluster answers"
    mkdir -p "$DIR"
    write_config
    local n r
    for n in "${NODES[@]}"; do
        launch "node-$n" node --config "$DIR/cluster.json" --id "$n" --data "$DIR/node-$n"
    done
    for r in "${ROUTERS[@]}"; do
        launch "router-$r" router --config "$DIR/cluster.json" --listen "127.0.0.1:$(router_port "$r")"
    done
    local deadline=$((SECONDS + START_TIMEOUT)) ok
    while :; do
        ok=1
        for n in "${NODES[@]}"; do
            [[ -n $(live_pid "node-$n") ]] || { logs_hint; die "node $n exited"; }
        done
        for r in "${ROUTERS[@]}"; do
            [[ -n $(live_pid "router-$r") ]] || { logs_hint; die "router $r exited"; }
            curl -sf -m 2 "http://127.0.0.1:$(router_port "$r")/health" >/dev/null || ok=0
        done
        if (( ok )); then
            for r in "${ROUTERS[@]}"; do round_trip "$r" || ok=0; done
        fi
        (( ok )) && break
        if (( SECONDS >= deadline )); then
            logs_hint
            die "the cluster did not answer within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
    for r in "${ROUTERS[@]}"; do
        echo "router http://127.0.0.1:$(router_port "$r")"
    done
}

stop_one() {
    local name=$1 pid i
    pid=$(live_pid "$name")
    if [[ -z $pid ]]; then
        rm -f "$DIR/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "local-cluster: $name (pid $pid) did not stop within 10 s: SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$name.pid"
    echo "$name stopped"
}

cmd_stop() {
    local r n
    for r in "${ROUTERS[@]}"; do stop_one "router-$r"; done
    for n in "${NODES[@]}"; do stop_one "node-$n"; done
}

cmd_status() {
    local name pid state running=0 total=0
    for name in "${NODES[@]/#/node-}" "${ROUTERS[@]/#/router-}"; do
        total=$((total + 1))
        pid=$(live_pid "$name")
        if [[ -n $pid ]]; then
            state="running (pid $pid)"
            running=$((running + 1))
        elif [[ -f $DIR/$name.pid ]]; then
            state="dead (stale pid file)"
        else
            state="stopped"
        fi
        case $name in
        router-*) state="$state http://127.0.0.1:$(router_port "${name#router-}")" ;;
        esac
        printf '%-9s %s\n' "$name" "$state"
    done
    (( running == total ))
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: $0 start|stop|status (see the comment at the top, or docs/OPERATIONS.md)" >&2
    exit 2
    ;;
esac
