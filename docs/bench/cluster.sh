#!/usr/bin/env bash
# cluster.sh: three nodes behind a round-robin client, on one machine and
# one bench origin (../shared/bench), loopback only:
#
#   fragcache  3 replicas sharing one redis-server (--redis)
#   fragcache-local  3 replicas without --redis (each its own cache)
#   nginx      3 nginx SSI instances, each its own proxy_cache
#   varnish    3 Varnish ESI instances, each its own storage
#
# and for each:
#   stampede   200 requests at once, round-robin over the three, on a cold
#              page of 10 fragments of 200 ms each: origin fetches per
#              fragment (fragcache's goal 1, per-node caches 3), page p99
#   warm       req/s through the three on the warm 10-include page: one
#              wrk per node (-t1, 17 connections each), DUR seconds, summed
#   l2hit      (fragments of 0 ms) a page filled through node 1, then
#              requested through node 2 for the first time (fragcache: an
#              L1 miss that the L2 answers; per-node caches: an origin
#              fetch), the next request there (an L1 hit), and a page
#              nobody has seen: p50 and p99 of each over 200 pages
#
#   bash docs/bench/cluster.sh [results.csv]
#
# REDIS_TIMEOUT (25ms, the default of --redis-timeout) is given to the L2
# replicas; PHASES and SYSTEMS pick what runs.
#
# REPEAT (3) rounds; the CSV has a line per round, system and measure, and
# the medians are printed. Needs nginx, varnishd, redis-server, wrk, Go.
# Everything it starts it stops again, by PID, also on an error or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BENCH=${BENCH:-$TOP/../shared/bench}
REPEAT=${REPEAT:-3} DUR=${DUR:-8} REDIS_TIMEOUT=${REDIS_TIMEOUT:-25ms}
PHASES=${PHASES:-stampede warm l2hit} SYSTEMS=${SYSTEMS:-fragcache fragcache-local nginx varnish}
OUT=${1:-$HERE/results/cluster.csv}
OP=${ORIGIN_PORT:-24480} RP=${REDIS_PORT:-24489}
FC=(24481 24482 24483) FL=(24484 24485 24486) NG=(24491 24492 24493) VA=(24494 24495 24496)
PATH="$PATH:/usr/sbin:/sbin"
for t in nginx varnishd redis-server wrk curl go; do command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 2; }; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

W=$(mktemp -d)
chmod 755 "$W" # the peers' workers (nobody, vcache) read and write under it
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM

(cd "$BENCH/origin" && GOFLAGS='' go build -o "$W/origin" .)
(cd "$TOP" && go build -o "$W/fragcache" . && go build -o "$W/curvetool" ./docs/bench/curvetool)

up() { # PORT [PATH]
    for _ in $(seq 150); do curl -fsS -o /dev/null "http://127.0.0.1:$1${2:-/static}" 2>/dev/null && return; sleep 0.2; done
    echo "port $1 did not come up" >&2; exit 1
}
"$W/origin" -listen "127.0.0.1:$OP" -frag-max-age 3600 >"$W/origin.log" 2>&1 &
pids+=("$!")
up "$OP"
redis-server --bind 127.0.0.1 --port "$RP" --save '' --appendonly no --dir "$W" >"$W/redis.log" 2>&1 &
pids+=("$!")
for i in 0 1 2; do
    "$W/fragcache" --listen "127.0.0.1:${FC[$i]}" --upstream "http://127.0.0.1:$OP" --admin-listen "127.0.0.1:$((FC[i] + 100))" \
        --access-log=false --redis "redis://127.0.0.1:$RP" --redis-timeout "$REDIS_TIMEOUT" --scope-secret cluster-bench-secret-0123456789 >"$W/fc$i.log" 2>&1 &
    pids+=("$!")
    "$W/fragcache" --listen "127.0.0.1:${FL[$i]}" --upstream "http://127.0.0.1:$OP" --admin-listen "127.0.0.1:$((FL[i] + 100))" \
        --access-log=false >"$W/fl$i.log" 2>&1 &
    pids+=("$!")
    mkdir -p "$W/nginx$i"
    sed -e "s#@WORK@/nginx#$W/nginx$i#g; s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" \
        -e "s/@NGINX_PORT@/${NG[$i]}/g; s/@NGINX_WORKERS@/auto/g" "$BENCH/conf/nginx.conf.in" >"$W/nginx$i.conf"
    nginx -p "$W/nginx$i/" -c "$W/nginx$i.conf" -e "$W/nginx$i/error.log" -g 'daemon off;' &
    pids+=("$!")
    sed -e "s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" "$BENCH/conf/varnish.vcl.in" >"$W/varnish$i.vcl"
    chmod 644 "$W/varnish$i.vcl"
    varnishd -F -a "127.0.0.1:${VA[$i]}" -T none -n "$W/varnish$i" -f "$W/varnish$i.vcl" -s malloc,256m >"$W/varnish$i.log" 2>&1 &
    pids+=("$!")
done
for i in 0 1 2; do
    up "${FC[$i]}"; up "${FL[$i]}"; up "${NG[$i]}"; up "${VA[$i]}"
    up $((FC[i] + 100)) /readyz
done
for _ in $(seq 100); do
    n=0
    for i in 0 1 2; do
        m=$(curl -fsS "http://127.0.0.1:$((FC[i] + 100))/metrics" || true)
        grep -q '^fragcache_l2_up 1' <<<"$m" && n=$((n + 1))
    done
    ((n == 3)) && break
    sleep 0.2
done

nodes() { # SYSTEM: its three base URLs, comma-separated
    local -n ports
    case $1 in fragcache) ports=FC ;; fragcache-local) ports=FL ;; nginx) ports=NG ;; varnish) ports=VA ;; esac
    echo "http://127.0.0.1:${ports[0]},http://127.0.0.1:${ports[1]},http://127.0.0.1:${ports[2]}"
}
pagepath() { [[ $1 == nginx ]] && echo /ssi-page || echo /page; }
kv() { sed -n "s/.*[ ^]$2=\([^ ]*\).*/\1/p" <<<" $1"; }
l2metric() { # NAME LABEL: the sum over the L2 replicas
    local s=0 i v
    for i in 0 1 2; do
        v=$(curl -fsS "http://127.0.0.1:$((FC[i] + 100))/metrics" | awk -v n="$1" -v l="$2" 'index($0, n) == 1 && index($0, l) { s += $2 } END { print s + 0 }')
        s=$(awk -v a="$s" -v b="$v" 'BEGIN { print a + b }')
    done
    echo "$s"
}

mkdir -p "$(dirname "$OUT")"
{
    echo "# cluster $(date -u +%FT%TZ) $(uname -r) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) cores=$(nproc) dur=${DUR}s"
    echo "# fragcache $(git -C "$TOP" rev-parse --short HEAD) $(go version | cut -d' ' -f3) $(nginx -v 2>&1) $(varnishd -V 2>&1 | head -1) $(redis-server --version | cut -d' ' -f1-3)"
    echo "# --redis-timeout $REDIS_TIMEOUT; phases: $PHASES"
    echo "round,system,measure,value,detail"
} >"$OUT"
row() { echo "$1,$2,$3,$4,$5" | tee -a "$OUT"; }

for ((r = 1; r <= REPEAT; r++)); do
  for phase in $PHASES; do
    case $phase in
    stampede) # a cold tag per round and system
    curl -fsS -o /dev/null "http://127.0.0.1:$OP/_config?frag_delay=200ms"
    for s in $SYSTEMS; do
        tag="st$r-$s-$$"
        t0=$(l2metric fragcache_l2_requests_total 'result="timeout"')
        out=$("$W/curvetool" stampede -bases "$(nodes "$s")" -path "$(pagepath "$s")?n=10&v=$tag" -c 200 -n 10)
        sleep 1.5 # fragcache answers placeholders at once; its fills end in the background
        st=$(curl -fsS "http://127.0.0.1:$OP/_stats?v=$tag")
        fetches=$(sed -n 's/.*"frag_fetches":\([0-9]*\).*/\1/p' <<<"$st")
        maxper=$(sed -n 's/.*"frag_max_per_path":\([0-9]*\).*/\1/p' <<<"$st")
        t1=$(l2metric fragcache_l2_requests_total 'result="timeout"')
        row "$r" "$s" fetches_per_fragment "$(awk -v f="$fetches" 'BEGIN { printf "%.1f", f / 10 }')" \
            "max_per_fragment=$maxper l2_timeouts=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')"
        row "$r" "$s" stampede_p99_ms "$(kv "$out" p99_ms)" "p50_ms=$(kv "$out" p50_ms) complete=$(kv "$out" complete)/200 errors=$(kv "$out" errors)"
    done
    curl -fsS -o /dev/null "http://127.0.0.1:$OP/_config?frag_delay=0s"
    ;;
    warm) # one wrk per node, at once
    for s in $SYSTEMS; do
        IFS=, read -ra urls <<<"$(nodes "$s")"
        wp=()
        for u in "${urls[@]}"; do wrk -t1 -c17 -d2s "$u$(pagepath "$s")?n=10&v=warm" >/dev/null & wp+=("$!"); done
        wait "${wp[@]}"
        for k in 0 1 2; do
            b=$(curl -fsS "${urls[$k]}$(pagepath "$s")?n=10&v=warm")
            [[ $(grep -o 'data-frag-body=' <<<"$b" | wc -l) -eq 10 ]] || { echo "ERROR: $s node $k is not composed" >&2; exit 1; }
        done
        wp=()
        for k in 0 1 2; do wrk -t1 -c17 -d"${DUR}s" --latency "${urls[$k]}$(pagepath "$s")?n=10&v=warm" >"$W/wrk$k.out" & wp+=("$!"); done
        wait "${wp[@]}"
        rps=$(cat "$W"/wrk[012].out | awk '/Requests\/sec/ { s += $2 } END { printf "%.0f", s }')
        p99=$(cat "$W"/wrk[012].out | awk '$1 == "99%" { v = $2; n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
            m = n * (u == "us" ? 0.001 : u == "ms" ? 1 : u == "s" ? 1000 : 1); if (m > w) w = m } END { printf "%.2f", w }')
        row "$r" "$s" warm_rps "$rps" "worst_node_p99_ms=$p99"
    done
    ;;
    l2hit) # fragments of 0 ms
    for s in $SYSTEMS; do
        IFS=, read -ra urls <<<"$(nodes "$s")"
        out=$("$W/curvetool" l2hit -bases "${urls[0]},${urls[1]}" -path "$(pagepath "$s")" -n 10 -tags 200)
        row "$r" "$s" second_node_first_p99_ms "$(kv "$out" l2_p99_ms)" "p50_ms=$(kv "$out" l2_p50_ms) incomplete=$(kv "$out" l2_incomplete)"
        row "$r" "$s" l1_hit_p99_ms "$(kv "$out" l1_p99_ms)" "p50_ms=$(kv "$out" l1_p50_ms)"
        row "$r" "$s" cold_miss_p99_ms "$(kv "$out" miss_p99_ms)" "p50_ms=$(kv "$out" miss_p50_ms)"
    done
    ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
    esac
  done
done

echo
echo "medians over $REPEAT rounds:"
awk -F, '!/^#/ && $1 != "round" { k = $2 "," $3; n[k]++; v[k, n[k]] = $4; keys[k] = 1 }
    function med(k, c,   i, j, t, a) { for (i = 1; i <= c; i++) a[i] = v[k, i] + 0
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((c + 1) / 2)] }
    END { for (k in keys) printf "%-45s %10.2f\n", k, med(k, n[k]) }' "$OUT" | sort
