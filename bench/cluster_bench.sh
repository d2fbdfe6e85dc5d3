#!/usr/bin/env bash
# The local cluster (3 nodes, 2 routers, 3 data groups x 3 replicas) against
# `memgrid serve` (one process, 1 replica per group) on the same machine in the
# same run, then a leader SIGKILLed under load. docs/BENCHMARKS.md "Cluster".
#
#   bench/cluster_bench.sh [--quick] [--failover-only]
#
# 1. Starts a cluster with deploy/local-cluster.sh in a temp dir and a
#    `memgrid serve` beside it.
# 2. Runs the `memgrid bench` workloads docs/BENCHMARKS.md reports for serve
#    (searches of a 1,000- and a 10,000-memory cube at 1 and 32 clients; adds
#    of 1 and 16 messages at 8 clients), each case on serve then at once on
#    router 1, and prints both and cluster/serve.
# 3. Failover: 4 writer loops (curl, timestamps in ns) add to cubes that group
#    1 owns while `memgrid bench` adds to every group (4 clients); after a few
#    seconds the node leading group 1 (from `memgrid ctl status --json`) is
#    SIGKILLed. Reports the largest gap between acknowledged writes to group
#    1, the slowest add, the errors, and how long the restarted node takes
#    until `ctl status` is healthy again.
#
# Environment: MEMGRID_BIN (default ./build/memgrid), CLUSTER_BENCH_PORT (base
# port, default 18300: routers on P and P+1, serve on P+15, nodes P+20...),
# CLUSTER_BENCH_DURATION (measured seconds per case, default 8),
# CLUSTER_BENCH_KEEP=1 keeps the temp dir. --quick: 3 s cases, no 10,000 cube;
# --failover-only: part 3 alone.
# Needs curl and jq.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MEMGRID_BIN:-$ROOT/build/memgrid}
PORT=${CLUSTER_BENCH_PORT:-18300}
DUR=${CLUSTER_BENCH_DURATION:-8}
QUICK=0
FAILOVER_ONLY=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1; DUR=3 ;;
    --failover-only) FAILOVER_ONLY=1 ;;
    *) echo "usage: $0 [--quick] [--failover-only]" >&2; exit 2 ;;
    esac
done
[[ -x $BIN ]] || { echo "cluster_bench: $BIN is not an executable (MEMGRID_BIN)" >&2; exit 1; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for c in curl jq; do
    command -v $c >/dev/null || { echo "cluster_bench: $c is needed" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/memgrid-cluster-bench.XXXXXX)
export MEMGRID_CLUSTER_DIR=$TMP/cluster MEMGRID_BASE_PORT=$PORT MEMGRID_BIN=$BIN
SERVE_URL=http://127.0.0.1:$((PORT + 15))
R1=http://127.0.0.1:$PORT
SERVE_PID=
WRITER_PIDS=()
BENCH_PID=

cleanup() {
    local p
    for p in "${WRITER_PIDS[@]}" $BENCH_PID; do kill "$p" 2>/dev/null || true; done
    "$ROOT/deploy/local-cluster.sh" stop >/dev/null 2>&1 || true
    if [[ -n $SERVE_PID ]]; then
        kill -TERM "$SERVE_PID" 2>/dev/null || true
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    if [[ ${CLUSTER_BENCH_KEEP:-0} == 1 ]]; then
        echo "cluster_bench: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

log() { echo "cluster_bench: $*" >&2; }

log "cluster in $TMP/cluster, base port $PORT; serve on $SERVE_URL; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/deploy/local-cluster.sh" start >&2
MEMGRID_LOG=warn "$BIN" serve --data "$TMP/serve" --listen "127.0.0.1:$((PORT + 15))" \
    >"$TMP/serve.log" 2>&1 &
SERVE_PID=$!
for ((i = 0; i < 100; i++)); do
    curl -sf -m 2 "$SERVE_URL/health" >/dev/null && break
    kill -0 "$SERVE_PID" 2>/dev/null || { cat "$TMP/serve.log" >&2; exit 1; }
    sleep 0.2
done

# ---- 1. serve vs cluster ---------------------------------------------------

B() { "$BIN" bench --no-progress --quiet "$@"; }
RESULTS=$TMP/results.tsv
: >"$RESULTS"

# one case on one target: label, target, op, then bench options; appends
# "label target req/s p50 p99 errors" to $RESULTS
run_case() {
    local label=$1 name=$2 url=$3 op=$4 json=$TMP/case.json
    shift 4
    B --target "$url" --duration "$DUR" --json "$json" "$@" >/dev/null 2>"$TMP/case.err" || {
        log "bench failed ($label on $name):"; cat "$TMP/case.err" >&2; return 1; }
    jq -r --arg l "$label" --arg n "$name" --arg op "$op" \
        '.targets[0].operations[$op] | [$l, $n, .throughput_per_s, .p50_ms, .p99_ms, .errors] | @tsv' \
        "$json" >>"$RESULTS"
}

# a case on serve, then on router 1 (same seed: the same requests)
both() {
    local label=$1 op=$2
    shift 2
    log "case: $label"
    run_case "$label" serve "$SERVE_URL" "$op" "$@"
    run_case "$label" cluster "$R1" "$op" "$@"
}

load() {   # load a cube of N memories on both targets
    local n=$1 prefix=$2 u
    for u in "$SERVE_URL" "$R1"; do
        B --target "$u" --cubes 1 --memories "$n" --cube-prefix "$prefix" --requests 1 \
            --concurrency 1 --warmup 0 >/dev/null 2>"$TMP/load.err" || {
            log "loading $prefix on $u failed:"; cat "$TMP/load.err" >&2; exit 1; }
    done
}

if (( ! FAILOVER_ONLY )); then
log "loading the 1,000-memory cube on both"
load 1000 s1k
both "search, 1,000 memories, 1 client" search --cubes 1 --memories 1000 --cube-prefix s1k --no-load --concurrency 1
both "search, 1,000 memories, 32 clients" search --cubes 1 --memories 1000 --cube-prefix s1k --no-load --concurrency 32
if (( ! QUICK )); then
    log "loading the 10,000-memory cube on both"
    load 10000 s10k
    both "search, 10,000 memories, 1 client" search --cubes 1 --memories 10000 --cube-prefix s10k --no-load --concurrency 1
    both "search, 10,000 memories, 32 clients" search --cubes 1 --memories 10000 --cube-prefix s10k --no-load --concurrency 32
fi
both "adds, batch 1, 8 clients" add --workload ingest --batch 1 --concurrency 8 --cube-prefix ing-b1
both "adds, batch 16, 8 clients" add --workload ingest --batch 16 --concurrency 8 --cube-prefix ing-b16
fi

# ---- 2. failover under load ------------------------------------------------

ctl() { "$BIN" ctl --router "$R1" "$@"; }

# four cubes group 1 owns, for the writers
CUBES=()
for ((i = 0; i < 400 && ${#CUBES[@]} < 4; i++)); do
    # GET /admin/slots/ID (docs/API.md)
    g=$(curl -sf -m 10 "$R1/admin/slots/failover-$i" | jq -r '.data.cube.group // empty')
    [[ $g == 1 ]] && CUBES+=("failover-$i")
done
(( ${#CUBES[@]} == 4 )) || { log "found no 4 cubes of group 1"; exit 1; }

LEADER=$(ctl status --json | jq -r '.groups[] | select(.id == 1) | .leader')
[[ $LEADER =~ ^[1-9][0-9]*$ ]] || { log "group 1 has no leader ($LEADER)"; exit 1; }
LEADER_PID=$(<"$MEMGRID_CLUSTER_DIR/node-$LEADER.pid")
LED=$(ctl status --json | jq -r --argjson n "$LEADER" '[.groups[] | select(.leader == $n) | .id] | join(",")')

STOP=$TMP/stop-writers
writer() {   # cube, output file: "send_ns answer_ns ok" per add
    local cube=$1 out=$2 k=0 t0 t1 body ok
    while [[ ! -e $STOP ]]; do
        k=$((k + 1))
        t0=$(date +%s%N)
        body=$(curl -s -m 10 -X POST "$R1/product/add" -H 'Content-Type: application/json' \
            -d "{\"user_id\": \"$cube\", \"messages\": [{\"role\": \"user\", \"content\": \"failover write $k of $cube\"}]}" || true)
        t1=$(date +%s%N)
        ok=0
        [[ ${body//[[:space:]]/} == *'"code":200'* ]] && ok=1
        echo "$t0 $t1 $ok" >>"$out"
    done
}

FO_SECONDS=15
KILL_AFTER=5
log "failover: group 1 led by node $LEADER (pid $LEADER_PID; it leads groups $LED); writers on ${CUBES[*]}"
B --target "$R1" --workload ingest --batch 1 --concurrency 4 --duration "$FO_SECONDS" --warmup 0 \
    --cube-prefix fo-bench --json "$TMP/fo-bench.json" >/dev/null 2>"$TMP/fo-bench.err" &
BENCH_PID=$!
for c in "${CUBES[@]}"; do
    writer "$c" "$TMP/writer-$c.txt" &
    WRITER_PIDS+=($!)
done
sleep "$KILL_AFTER"
KILL_NS=$(date +%s%N)
kill -KILL "$LEADER_PID"
log "SIGKILL node $LEADER"
sleep $((FO_SECONDS - KILL_AFTER - 2))
touch "$STOP"
for p in "${WRITER_PIDS[@]}"; do wait "$p" || true; done
WRITER_PIDS=()
wait "$BENCH_PID" || { log "the bench under failover failed:"; cat "$TMP/fo-bench.err" >&2; }
BENCH_PID=

# restart the killed node; time until the cluster is healthy again
T0=$(date +%s%N)
"$ROOT/deploy/local-cluster.sh" start >/dev/null
for ((i = 0; i < 600; i++)); do
    ctl status >/dev/null 2>&1 && break
    sleep 0.1
done
HEAL_MS=$((($(date +%s%N) - T0) / 1000000))
NEW_LEADER=$(ctl status --json | jq -r '.groups[] | select(.id == 1) | .leader')

cat "$TMP"/writer-*.txt >"$TMP/writes.txt"
# acknowledged answers in time order: the largest gap, where it starts
# relative to the kill, the slowest add, errors
FO=$(sort -k2,2n "$TMP/writes.txt" | awk -v kill="$KILL_NS" '
    { if ($3 == 1) { acked++; if (prev && $2 - prev > gap) { gap = $2 - prev; at = prev - kill }
                     prev = $2 } else errors++
      d = $2 - $1; if (d > slow) slow = d; total++ }
    END { printf "%d %d %.0f %.0f %.0f\n", total, errors, gap / 1e6, at / 1e6, slow / 1e6 }')
read -r FO_TOTAL FO_ERRORS FO_GAP FO_GAP_AT FO_SLOW <<<"$FO"
FO_BENCH=$(jq -r '.targets[0].operations.add | [.requests, .errors, .max_ms, .p99_ms] | @tsv' "$TMP/fo-bench.json")
read -r FB_REQ FB_ERR FB_MAX FB_P99 <<<"$FO_BENCH"
FB_TIMELINE=$(jq -r '.targets[0].timeline_per_s // .timeline_per_s | map(tostring) | join(" ")' "$TMP/fo-bench.json")

# ---- summary ----------------------------------------------------------------

echo
echo "memgrid cluster (3 nodes, 2 routers, 3 data groups x 3 replicas) vs memgrid serve, $(date -u +%FT%TZ)"
echo "$(nproc) CPUs shared by both and the load client; load average now $(cut -d' ' -f1-3 /proc/loadavg); $DUR s per case after 2 s warm-up"
echo
[[ -s $RESULTS ]] && awk -F'\t' '
    BEGIN { printf "%-38s %10s %8s %8s %10s %8s %8s %7s %7s\n", "case", "serve/s", "p50 ms", "p99 ms",
            "cluster/s", "p50 ms", "p99 ms", "ratio", "errors" }
    $2 == "serve" { s[$1] = $3; sp50[$1] = $4; sp99[$1] = $5; se[$1] = $6; order[n++] = $1 }
    $2 == "cluster" { printf "%-38s %10.0f %8.2f %8.2f %10.0f %8.2f %8.2f %7.2f %7s\n", $1, s[$1], sp50[$1],
            sp99[$1], $3, $4, $5, (s[$1] > 0 ? $3 / s[$1] : 0), se[$1] "/" $6 }' "$RESULTS"
echo
echo "failover: SIGKILL of node $LEADER (leader of groups $LED) ${KILL_AFTER} s into ${FO_SECONDS} s of adds"
printf '  group 1 writers (4 curl loops): %d adds, %d errors, largest gap between acknowledged writes %d ms (from %+d ms relative to the kill), slowest add %d ms\n' \
    "$FO_TOTAL" "$FO_ERRORS" "$FO_GAP" "$FO_GAP_AT" "$FO_SLOW"
printf '  memgrid bench ingest, 4 clients, all groups: %s adds, %s errors, p99 %.1f ms, max %.1f ms\n' \
    "$FB_REQ" "$FB_ERR" "$FB_P99" "$FB_MAX"
echo "  adds completed per second: $FB_TIMELINE"
echo "  new leader of group 1: node $NEW_LEADER; node $LEADER restarted, cluster healthy again after $HEAL_MS ms"
