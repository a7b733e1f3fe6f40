#!/usr/bin/env bash
# s1-cpu.sh: CPU per request of plain proxying (the harness's S1 /static),
# nginx beside one or more fragcache-like candidates, on loopback only.
#
#   bash docs/bench/s1-cpu.sh ./fragcache [other-binary ...]
#
# Each candidate is started as `BIN --listen A --upstream U --admin-listen B
# --access-log=false`. For each round and system: 2 s of wrk warm-up, then
# DUR seconds of `wrk -t2 -cCONNS` on /static, and the CPU time the proxy's
# processes and the origin's used, from /proc, divided by the requests.
# Needs nginx, wrk and Go (the origin is built from ../shared/bench/origin).
# Everything it starts it stops again, by PID, also on an error or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$HERE/../../../shared/bench}
ROUNDS=${ROUNDS:-3} DUR=${DUR:-8} CONNS=${CONNS:-50}
OP=${ORIGIN_PORT:-28080} NP=${NGINX_PORT:-28082} CP=${CANDIDATE_PORT:-28090}
(($# > 0)) || { echo "usage: $0 BINARY [BINARY ...]" >&2; exit 2; }

W=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

(cd "$BENCH/origin" && GOFLAGS='' go build -o "$W/origin" .)
"$W/origin" -listen "127.0.0.1:$OP" >"$W/origin.log" 2>&1 &
opid=$!; pids+=("$opid")
mkdir -p "$W/nginx"
sed -e "s#@WORK@#$W#g; s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" \
    -e "s/@NGINX_PORT@/$NP/g; s/@NGINX_WORKERS@/auto/g" "$BENCH/conf/nginx.conf.in" >"$W/nginx.conf"
nginx -p "$W/nginx/" -c "$W/nginx.conf" -e "$W/nginx/error.log" -g 'daemon off;' &
npid=$!; pids+=("$npid")

names=(nginx) ports=("$NP") procs=("$npid")
i=0
for b in "$@"; do
    p=$((CP + i)); i=$((i + 1))
    "$b" --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$OP" \
        --admin-listen "127.0.0.1:$((p + 100))" --access-log=false >"$W/c$i.log" 2>&1 &
    pids+=("$!"); procs+=("$!"); ports+=("$p"); names+=("$(basename "$b")")
done
sleep 2

ticks() { # PID: user+system clock ticks of PID and its children processes
    local t=0 q
    for q in $(pgrep -P "$1") "$1"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$q/stat")))
    done
    echo "$t"
}
hz=$(getconf CLK_TCK)
for ((r = 1; r <= ROUNDS; r++)); do
    for k in "${!ports[@]}"; do
        url=http://127.0.0.1:${ports[$k]}/static
        wrk -t2 -c"$CONNS" -d2s "$url" >/dev/null
        c0=$(ticks "${procs[$k]}"); o0=$(ticks "$opid")
        out=$(wrk -t2 -c"$CONNS" -d"${DUR}s" "$url")
        c1=$(ticks "${procs[$k]}"); o1=$(ticks "$opid")
        n=$(awk '/requests in/{print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        awk -v name="${names[$k]}" -v r="$r" -v rps="$rps" -v n="$n" -v hz="$hz" \
            -v c=$((c1 - c0)) -v o=$((o1 - o0)) \
            'BEGIN { printf "round %d  %-14s req/s %9.0f  proxy %6.1f us/req  origin %6.1f us/req\n", r, name, rps, c * 1e6 / hz / n, o * 1e6 / hz / n }'
    done
done
