#!/usr/bin/env bash
# curves.sh: how each system's cost grows with the work, fragcache beside
# nginx SSI and Varnish ESI on the bench origin (../shared/bench), warm
# caches, loopback only:
#
#   includes    includes per page 1, 10, 100, 1000: req/s, CPU us per page
#               and per include (50 connections)
#   size        page of 20 KB, 200 KB, 2 MB with 10 includes: MB/s composed
#   population  10 000, 100 000, 1 000 000 distinct cached fragments of
#               1 KiB (pages of 100 includes, a random page per request):
#               CPU us per include of a hit, memory per fragment
#
# Fragments are sent with max-age=3600, so none goes stale during a run.
#   conns       10, 100, 1000 connections on the 10-include page: req/s, p99
#
#   bash docs/bench/curves.sh [results.csv]      # PARTS="includes size" to pick
#
# For every point and system: 2 s of wrk warm-up, then DUR (8) seconds of
# `wrk -t2 --latency`; the CPU the proxy's processes used comes from /proc
# (user + system ticks), memory from their Pss (/proc/PID/smaps_rollup,
# shared pages counted once), nginx's cache files from du. REPEAT (3)
# rounds; the CSV has a line per round, and docs/bench/curves-plot.sh
# turns it into medians and PNGs. Everything it starts it stops again, by
# PID, also on an error or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BENCH=${BENCH:-$TOP/../shared/bench}
REPEAT=${REPEAT:-3} DUR=${DUR:-8}
PARTS=${PARTS:-includes size population conns}
OUT=${1:-$HERE/results/curves.csv}
OP=${ORIGIN_PORT:-24180} VP=${VARNISH_PORT:-24181} NP=${NGINX_PORT:-24182} CP=${CANDIDATE_PORT:-24183}
PATH="$PATH:/usr/sbin:/sbin"
for t in nginx varnishd wrk curl go; do command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 2; }; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

W=$(mktemp -d)
chmod 755 "$W" # the peers' workers (nobody, vcache) read and write under it
declare -A PID=()
stop() { # NAME...: stop what start_* started under NAME, by its PID
    local n
    for n in "$@"; do
        [[ -n ${PID[$n]:-} ]] || continue
        kill "${PID[$n]}" 2>/dev/null || true
        wait "${PID[$n]}" 2>/dev/null || true
        unset "PID[$n]"
    done
}
cleanup() {
    stop fragcache nginx varnish origin
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

(cd "$BENCH/origin" && GOFLAGS='' go build -o "$W/origin" .)
(cd "$TOP" && go build -o "$W/fragcache" . && go build -o "$W/curvetool" ./docs/bench/curvetool)

up() { # PORT: wait until it answers
    for _ in $(seq 150); do curl -fsS -o /dev/null "http://127.0.0.1:$1/static" 2>/dev/null && return; sleep 0.2; done
    echo "port $1 did not come up" >&2; exit 1
}
start_origin() { # origin flags
    stop origin
    "$W/origin" -listen "127.0.0.1:$OP" -frag-max-age 3600 "$@" >"$W/origin.log" 2>&1 &
    PID[origin]=$!
    up "$OP"
}
start_proxies() { # CACHE_BYTES (fragcache and Varnish), NGINX_ZONE (keys), NGINX_MAX (disk)
    stop fragcache nginx varnish
    rm -rf "$W/nginx" "$W/varnish"
    mkdir -p "$W/nginx"
    sed -e "s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" "$BENCH/conf/varnish.vcl.in" >"$W/varnish.vcl"
    chmod 644 "$W/varnish.vcl"
    varnishd -F -a "127.0.0.1:$VP" -T none -n "$W/varnish" -f "$W/varnish.vcl" -s "malloc,$1" >"$W/varnish.log" 2>&1 &
    PID[varnish]=$!
    sed -e "s#@WORK@#$W#g; s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" \
        -e "s/@NGINX_PORT@/$NP/g; s/@NGINX_WORKERS@/auto/g" \
        -e "s/keys_zone=frags:16m/keys_zone=frags:$2/; s/max_size=256m/max_size=$3/" "$BENCH/conf/nginx.conf.in" >"$W/nginx.conf"
    nginx -p "$W/nginx/" -c "$W/nginx.conf" -e "$W/nginx/error.log" -g 'daemon off;' &
    PID[nginx]=$!
    "$W/fragcache" --listen "127.0.0.1:$CP" --upstream "http://127.0.0.1:$OP" --admin-listen "127.0.0.1:$((CP + 100))" \
        --access-log=false --max-includes 1000 --cache-size "$1" --wait "$FC_WAIT" >"$W/fragcache.log" 2>&1 &
    PID[fragcache]=$!
    up "$VP"; up "$NP"; up "$CP"
}
port() { case $1 in fragcache) echo "$CP" ;; nginx) echo "$NP" ;; varnish) echo "$VP" ;; esac; }
pagepath() { [[ $1 == nginx ]] && echo /ssi-page || echo /page; }
procs() { # SYSTEM: its PID and its children's
    pgrep -P "${PID[$1]}" || true
    echo "${PID[$1]}"
}
ticks() { # SYSTEM: user + system clock ticks of its processes
    local t=0 q
    for q in $(procs "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$q/stat"))); done
    echo "$t"
}
pss() { # SYSTEM: bytes of Pss of its processes
    local t=0 q
    for q in $(procs "$1"); do t=$((t + $(awk '/^Pss:/{printf "%d", $2 * 1024}' "/proc/$q/smaps_rollup"))); done
    echo "$t"
}
hz=$(getconf CLK_TCK)
tomsec() { # wrk's 12.3us / 4.5ms / 1.2s / 1.0m
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        printf "%.3f", n * (u == "us" ? 0.001 : u == "ms" ? 1 : u == "s" ? 1000 : u == "m" ? 60000 : 1) }'
}
check() { # SYSTEM URL N: the page is composed, all N fragments in, no tag left
    local b
    b=$(curl -fsS "$2")
    if [[ $(grep -o 'data-frag-body=' <<<"$b" | wc -l) -ne $3 ]] || grep -q '<esi:\|<!--#' <<<"$b"; then
        echo "ERROR: $1 $2 is not composed with $3 fragments" >&2
        exit 1
    fi
}

mkdir -p "$(dirname "$OUT")"
{
    echo "# curves $(date -u +%FT%TZ) $(uname -r) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) cores=$(nproc) dur=${DUR}s"
    echo "# fragcache $(git -C "$TOP" rev-parse --short HEAD) $(go version | cut -d' ' -f3) $(nginx -v 2>&1) $(varnishd -V 2>&1 | head -1) $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "part,x,round,system,rps,p50_ms,p99_ms,page_bytes,mb_s,cpu_us_page,cpu_us_include,errors,mem_bytes_per_frag,disk_bytes_per_frag"
} >"$OUT"

# measure PART X ROUND SYSTEM PATH CONNS INCLUDES [LUA] [MEM] [DISK]: one
# point. With LUA the requests come from that wrk script (PATH is still
# checked for composition).
measure() {
    local part=$1 x=$2 r=$3 s=$4 path=$5 c=$6 n=$7 lua=${8:-} mem=${9:-} disk=${10:-}
    local url="http://127.0.0.1:$(port "$s")$path" out t0 t1 reqs rps p50 p99 bytes errs
    local args=(-t2 -c"$c" --timeout 10s --latency)
    [[ -n $lua ]] && args+=(-s "$lua")
    wrk "${args[@]}" -d2s "$url" >/dev/null
    check "$s" "$url" "$n"
    bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "$url")
    t0=$(ticks "$s")
    out=$(wrk "${args[@]}" -d"${DUR}s" "$url")
    t1=$(ticks "$s")
    reqs=$(awk '/requests in/{print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p50=$(tomsec "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(tomsec "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Socket errors/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 } /Non-2xx/ { e += $NF } END { print e + 0 }' <<<"$out")
    awk -v part="$part" -v x="$x" -v r="$r" -v s="$s" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v b="$bytes" \
        -v n="$n" -v reqs="$reqs" -v tk=$((t1 - t0)) -v hz="$hz" -v e="$errs" -v mem="$mem" -v disk="$disk" \
        'BEGIN { cpu = tk * 1e6 / hz / reqs
            printf "%s,%s,%d,%s,%.0f,%.3f,%.3f,%d,%.1f,%.1f,%.3f,%d,%s,%s\n", part, x, r, s, rps, p50, p99, b, rps * b / 1e6, cpu, cpu / n, e, mem, disk }' |
        tee -a "$OUT"
}

SYSTEMS="fragcache nginx varnish"
FC_WAIT=50ms
for part in $PARTS; do
    case $part in
    includes)
        start_origin
        start_proxies 256m 16m 256m
        for ((r = 1; r <= REPEAT; r++)); do
            for n in 1 10 100 1000; do
                for s in $SYSTEMS; do measure includes "$n" "$r" "$s" "$(pagepath "$s")?n=$n&v=warm" 50 "$n"; done
            done
        done
        ;;
    size)
        start_proxies 256m 16m 256m
        for ((r = 1; r <= REPEAT; r++)); do
            for kb in 20 200 2000; do
                start_origin -page-bytes $((kb * 1024))
                for s in $SYSTEMS; do measure size "$kb" "$r" "$s" "$(pagepath "$s")?n=10&v=warm" 50 10; done
            done
        done
        start_origin
        ;;
    conns)
        start_origin
        start_proxies 256m 16m 256m
        for ((r = 1; r <= REPEAT; r++)); do
            for c in 10 100 1000; do
                for s in $SYSTEMS; do measure conns "$c" "$r" "$s" "$(pagepath "$s")?n=10&v=warm" "$c" 10; done
            done
        done
        ;;
    population)
        start_origin
        FC_WAIT=2s # a cold page of the fill waits for its fragments; hits do not wait
        for frags in ${POPS:-10000 100000 1000000}; do
            pages=$((frags / 100))
            start_proxies 3g 256m 4g
            declare -A MEM=() DISK=()
            for s in $SYSTEMS; do
                before=$(pss "$s")
                "$W/curvetool" fill -base "http://127.0.0.1:$(port "$s")" -path "$(pagepath "$s")" -n 100 -pages "$pages" -conc 8 | sed "s/^/# $s $frags: /" | tee -a "$OUT"
                sleep 2
                MEM[$s]=$(( ($(pss "$s") - before) / frags ))
                DISK[$s]=""
                [[ $s == nginx ]] && DISK[$s]=$(( $(du -sb "$W/nginx/cache" | cut -f1) / frags ))
            done
            for s in $SYSTEMS; do
                cat >"$W/pop-$s.lua" <<EOF
math.randomseed(os.time() + math.floor(os.clock() * 1e6))
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1e9) + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000) end
request = function() return wrk.format("GET", "$(pagepath "$s")?n=100&v=f" .. math.random(0, $pages - 1)) end
EOF
            done
            for ((r = 1; r <= REPEAT; r++)); do
                for s in $SYSTEMS; do
                    measure population "$frags" "$r" "$s" "$(pagepath "$s")?n=100&v=f0" 50 100 "$W/pop-$s.lua" "${MEM[$s]}" "${DISK[$s]}"
                done
            done
            unset MEM DISK
        done
        FC_WAIT=50ms
        stop fragcache nginx varnish
        ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
echo "results: $OUT"
