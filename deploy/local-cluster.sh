#!/usr/bin/env bash
# A local memgrid cluster on loopback (docs/OPERATIONS.md): 3 nodes and 2
# routers; on first start `memgrid ctl init --groups 3 --replicas 3` places the
# meta group 0 and the data groups 1-3 with one replica on every node.
#
#   deploy/local-cluster.sh start|stop|status|add-node
#
# Environment:
#   MEMGRID_CLUSTER_DIR   config, data, logs and pid files (default ./memgrid-cluster)
#   MEMGRID_BASE_PORT     first port (default 7100; recorded in $DIR/base-port at
#                         the first start, later runs use the recorded one and
#                         refuse a different value); the port plan, with B = base:
#                           router R (1, 2)  HTTP on B + R - 1
#                           node N (1..9)    rpc B + 20N, survey B + 20N + 1,
#                                            raft of group G (0..15) on B + 20N + 2 + G
#                         so the default 3 nodes use 7100-7101 and 7120-7177.
#   MEMGRID_BIN           the memgrid binary (default ./build/memgrid)
#   MEMGRID_START_TIMEOUT seconds `start` and `add-node` wait (default 60)
#   MEMGRID_ELECTION_MS   raft election timeout of the nodes (default 400)
#
# `start` writes $MEMGRID_CLUSTER_DIR/node-N.conf and router-R.conf (kept when
# they exist; the processes read them with --config), starts what is not
# running, runs `memgrid ctl init` unless the cluster map already has an epoch
# (a restart), waits until `memgrid ctl status` says healthy and a write and a
# search go through every router, then prints `router http://127.0.0.1:PORT`
# per router. `stop` signals the processes named in the pid files only
# (SIGTERM to the routers then the nodes, then waits for all of them together,
# SIGKILL after 10 s); it exits 1 when $DIR has no pid file. `status` prints
# each process's state and `memgrid ctl status`; it exits 0 only when every
# process runs and the cluster is healthy. `add-node` starts the next node (4, 5, ...) with the same
# port plan and adds it to the map (`memgrid ctl add-node`); it hosts nothing
# until move-replica or rebalance places replicas on it.
set -euo pipefail

DIR=${MEMGRID_CLUSTER_DIR:-./memgrid-cluster}
BASE=${MEMGRID_BASE_PORT:-}
BIN=${MEMGRID_BIN:-./build/memgrid}
START_TIMEOUT=${MEMGRID_START_TIMEOUT:-60}
ELECTION_MS=${MEMGRID_ELECTION_MS:-400}
ROUTERS=(1 2)
GROUPS_INIT=3
REPLICAS_INIT=3
MAX_NODES=9

die() { echo "local-cluster: $*" >&2; exit 1; }
# a mistake in the invocation (exit 2): running it again as is will not help
die_usage() { echo "local-cluster: $*" >&2; exit 2; }

# The base port: the one recorded in $DIR/base-port by the first start (a
# cluster's configs and URLs depend on it), else MEMGRID_BASE_PORT, else 7100.
# A MEMGRID_BASE_PORT that contradicts the record is refused, except by `stop`
# (which needs no port: only the pid files).
BASE_FILE="$DIR/base-port"
if [[ -f $BASE_FILE ]]; then
    stored=$(<"$BASE_FILE")
    [[ -z $BASE || $BASE == "$stored" || ${1:-} == stop ]] ||
        die_usage "$DIR was started with base port $stored, not MEMGRID_BASE_PORT=$BASE (unset MEMGRID_BASE_PORT, or use another MEMGRID_CLUSTER_DIR)"
    BASE=$stored
    unset stored
fi
BASE=${BASE:-7100}
[[ $BASE =~ ^[0-9]+$ ]] && (( BASE >= 1024 && BASE + 20 * MAX_NODES + 20 <= 65535 )) ||
    die_usage "base port $BASE must be a port in 1024..$((65535 - 20 * MAX_NODES - 20))"
[[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "MEMGRID_START_TIMEOUT=$START_TIMEOUT is not a number"
[[ $ELECTION_MS =~ ^[0-9]+$ ]] || die "MEMGRID_ELECTION_MS=$ELECTION_MS is not a number"

router_port() { echo $((BASE + $1 - 1)); }
router_url() { echo "http://127.0.0.1:$(router_port "$1")"; }
node_port() { echo $((BASE + 20 * $1 + $2)); }   # $2: 0 rpc, 1 survey, 2 raft base
node_rpc() { echo "tcp://127.0.0.1:$(node_port "$1" 0)"; }

# The nodes of this cluster: 1..3 plus any added with add-node (a node-N.conf).
nodes() {
    local n f
    local -A seen=([1]=1 [2]=1 [3]=1)
    for f in "$DIR"/node-*.conf; do
        [[ -e $f ]] || continue
        n=${f##*/node-}
        n=${n%.conf}
        [[ $n =~ ^[0-9]+$ ]] && seen[$n]=1
    done
    printf '%s\n' "${!seen[@]}" | sort -n
}

ctl() { "$BIN" ctl --router "$(router_url 1)" "$@"; }

write_node_config() {   # node id
    local n=$1 f="$DIR/node-$1.conf"
    [[ -f $f ]] && return 0
    cat >"$f.tmp" <<EOF
# memgrid node $n of the local cluster (deploy/local-cluster.sh); read with --config.
id = $n
data = "$DIR/node-$n"
rpc = tcp://127.0.0.1:$(node_port "$n" 0)
survey = tcp://127.0.0.1:$(node_port "$n" 1)
raft-host = 127.0.0.1
raft-port = $(node_port "$n" 2)
election-ms = $ELECTION_MS
EOF
    mv "$f.tmp" "$f"
}

write_router_config() {   # router number
    local r=$1 f="$DIR/router-$1.conf" seeds
    [[ -f $f ]] && return 0
    seeds="$(node_rpc 1),$(node_rpc 2),$(node_rpc 3)"
    cat >"$f.tmp" <<EOF
# memgrid router $r of the local cluster (deploy/local-cluster.sh); read with --config.
seeds = $seeds
listen = 127.0.0.1:$(router_port "$r")
map-cache = "$DIR/router-$r.map"
EOF
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
    local name n
    echo "local-cluster: logs:" >&2
    for name in $(nodes | sed 's/^/node-/') "${ROUTERS[@]/#/router-}"; do
        echo "  $DIR/$name.log" >&2
        tail -n 5 "$DIR/$name.log" 2>/dev/null | sed 's/^/    /' >&2 || true
    done
}

check_alive() {
    local n r
    for n in $(nodes); do
        [[ -n $(live_pid "node-$n") ]] || { logs_hint; die "node $n exited"; }
    done
    for r in "${ROUTERS[@]}"; do
        [[ -n $(live_pid "router-$r") ]] || { logs_hint; die "router $r exited"; }
    done
}

# The epoch of the cluster map router 1 answers with (0 before init); fails
# when the router cannot tell (not up yet, meta group without leader).
map_epoch() {
    local out
    out=$(curl -sf -m 20 "$(router_url 1)/admin/map") || return 1
    out=${out//[[:space:]]/}
    [[ $out =~ \"code\":200 ]] || return 1
    [[ $out =~ \"epoch\":([0-9]+) ]] || return 1
    echo "${BASH_REMATCH[1]}"
}

round_trip() {   # a write and a search through router $1
    local url out
    url=$(router_url "$1")
    out=$(curl -sf -m 10 -X POST "$url/product/add" -H 'Content-Type: application/json' \
        -d '{"user_id": "local-cluster-check", "messages": [{"role": "user", "content": "the local cluster answers"}]}') || return 1
    grep -q '"code":200' <<<"${out// /}" || return 1
    out=$(curl -sf -m 10 -X POST "$url/product/search" -H 'Content-Type: application/json' \
        -d '{"user_id": "local-cluster-check", "query": "does the local cluster answer"}') || return 1
    grep -q 'the local cluster answers' <<<"$out"
}

wait_until() {   # what (for the message), then a command to retry
    local what=$1 deadline=$((SECONDS + START_TIMEOUT))
    shift
    until "$@" >"$DIR/check.out" 2>&1; do
        check_alive
        if (( SECONDS >= deadline )); then
            logs_hint
            echo "local-cluster: the last check ($*) said:" >&2
            sed 's/^/    /' "$DIR/check.out" >&2
            die "$what within ${START_TIMEOUT}s"
        fi
        sleep 0.5
    done
}

cluster_ready() {
    local r
    ctl status >/dev/null 2>&1 || return 1
    for r in "${ROUTERS[@]}"; do round_trip "$r" || return 1; done
}

cmd_start() {
    [[ -x $BIN ]] || die "$BIN is not an executable (build first: make build, or set MEMGRID_BIN)"
    command -v curl >/dev/null || die "curl is needed to check that the cluster answers"
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    [[ -f $DIR/base-port ]] || echo "$BASE" >"$DIR/base-port"
    local n r epoch
    for n in $(nodes); do
        write_node_config "$n"
        launch "node-$n" node --config "$DIR/node-$n.conf"
    done
    for r in "${ROUTERS[@]}"; do
        write_router_config "$r"
        launch "router-$r" router --config "$DIR/router-$r.conf"
    done
    wait_until "router 1 did not answer GET /admin/map" map_epoch
    epoch=$(map_epoch) || die "router 1 stopped answering GET /admin/map"
    if (( epoch == 0 )); then
        echo "local-cluster: initializing: $GROUPS_INIT data groups x $REPLICAS_INIT replicas" >&2
        if ! ctl init --groups "$GROUPS_INIT" --replicas "$REPLICAS_INIT" >"$DIR/init.out" 2>&1; then
            cat "$DIR/init.out" >&2
            logs_hint
            die "memgrid ctl init failed"
        fi
    fi
    wait_until "the cluster did not become healthy and answer" cluster_ready
    for r in "${ROUTERS[@]}"; do
        echo "router $(router_url "$r")"
    done
}

# Whether process $1 runs (a zombie, dead but not reaped yet, does not).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

cmd_stop() {
    [[ -d $DIR ]] && compgen -G "$DIR/*.pid" >/dev/null ||
        die "no cluster in $DIR (no pid files)"
    local name pid i j alive names=() pids=()
    # routers first, so that no request reaches a stopping node through them;
    # everything is signalled before anything is waited for
    for name in "${ROUTERS[@]/#/router-}" $(nodes | sed 's/^/node-/'); do
        pid=$(live_pid "$name")
        if [[ -z $pid ]]; then
            rm -f "$DIR/$name.pid"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        names+=("$name")
        pids+=("$pid")
    done
    (( ${#pids[@]} > 0 )) || { echo "nothing was running"; return 0; }
    for ((i = 0; i < 100; i++)); do
        alive=0
        for pid in "${pids[@]}"; do
            running "$pid" && { alive=1; break; }
        done
        (( alive )) || break
        sleep 0.1
    done
    for j in "${!names[@]}"; do
        name=${names[$j]}
        pid=${pids[$j]}
        if running "$pid"; then
            echo "local-cluster: $name (pid $pid) did not stop within 10 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$DIR/$name.pid"
        echo "$name stopped"
    done
}

cmd_status() {
    local name pid state running=0 total=0 rc=0
    for name in $(nodes | sed 's/^/node-/') "${ROUTERS[@]/#/router-}"; do
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
        router-*) state="$state $(router_url "${name#router-}")" ;;
        node-*) state="$state $(node_rpc "${name#node-}")" ;;
        esac
        printf '%-9s %s\n' "$name" "$state"
    done
    echo
    if [[ -n $(live_pid router-1) ]]; then
        ctl status || rc=$?
    elif [[ -n $(live_pid router-2) ]]; then
        "$BIN" ctl --router "$(router_url 2)" status || rc=$?
    else
        echo "no router runs: no cluster status"
        rc=1
    fi
    (( running == total && rc == 0 ))
}

cmd_add_node() {
    [[ -x $BIN ]] || die "$BIN is not an executable (build first: make build, or set MEMGRID_BIN)"
    [[ -d $DIR ]] || die "$DIR does not exist: start the cluster first"
    DIR=$(cd "$DIR" && pwd)
    local n
    n=$(nodes | tail -n 1)
    n=$((n + 1))
    (( n <= MAX_NODES )) || die "the port plan has room for $MAX_NODES nodes"
    write_node_config "$n"
    launch "node-$n" node --config "$DIR/node-$n.conf"
    # the node listens once it is up; add-node asks it who it is (NODE_INFO)
    wait_until "memgrid ctl add-node did not succeed" ctl add-node --rpc "$(node_rpc "$n")"
    echo "node $n $(node_rpc "$n") added (it hosts nothing yet: move-replica or rebalance)"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
add-node) cmd_add_node ;;
*)
    echo "usage: $0 start|stop|status|add-node (see the comment at the top, or docs/OPERATIONS.md)" >&2
    exit 2
    ;;
esac
