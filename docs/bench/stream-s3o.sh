#!/usr/bin/env bash
# stream-s3o.sh: bench scenario S3o (a cold page, 10 fragments, 2 of them
# taking 2 s) as a visitor sees it, fragcache with --stream-budget 3s beside
# nginx SSI and Varnish ESI: time to first byte, time until the whole page
# has arrived (its last part, placeholders or not) and until every fragment
# has (open loop, 100 requests/s for 5 s on one cold page), and the same in
# a headless Chromium's DOM (5 cold page loads).
#
#   bash docs/bench/stream-s3o.sh [results.csv]
#
# REPEAT rounds (3); the CSV has one line per round, system and measure,
# and the medians over the rounds are printed. Needs nginx, varnishd, Go
# and chromium; the origin and the peers' configs come from
# ../shared/bench. Loopback only; everything it starts it stops again, by
# PID, also on an error or Ctrl-C.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
BENCH=${BENCH:-$TOP/../shared/bench}
REPEAT=${REPEAT:-3}
OUT=${1:-$HERE/results/stream-s3o.csv}
OP=${ORIGIN_PORT:-24080} VP=${VARNISH_PORT:-24081} NP=${NGINX_PORT:-24082} CP=${CANDIDATE_PORT:-24083}
PATH="$PATH:/usr/sbin:/sbin"
for t in nginx varnishd go; do command -v "$t" >/dev/null || { echo "$t not found" >&2; exit 2; }; done

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
(cd "$TOP" && go build -o "$W/fragcache" . && go build -o "$W/streamdom" ./docs/bench/streamdom)
"$W/origin" -listen "127.0.0.1:$OP" -slow-every 5 -slow-delay 2s >"$W/origin.log" 2>&1 &
pids+=("$!")
sed -e "s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" "$BENCH/conf/varnish.vcl.in" >"$W/varnish.vcl"
chmod 644 "$W/varnish.vcl"
varnishd -F -a "127.0.0.1:$VP" -T none -n "$W/varnish" -f "$W/varnish.vcl" -s malloc,256m >"$W/varnish.log" 2>&1 &
pids+=("$!")
mkdir -p "$W/nginx"
sed -e "s#@WORK@#$W#g; s/@ORIGIN_HOST@/127.0.0.1/g; s/@ORIGIN_PORT@/$OP/g" \
    -e "s/@NGINX_PORT@/$NP/g; s/@NGINX_WORKERS@/auto/g" "$BENCH/conf/nginx.conf.in" >"$W/nginx.conf"
nginx -p "$W/nginx/" -c "$W/nginx.conf" -e "$W/nginx/error.log" -g 'daemon off;' &
pids+=("$!")
"$W/fragcache" --listen "127.0.0.1:$CP" --upstream "http://127.0.0.1:$OP" --admin-listen "127.0.0.1:$((CP + 100))" \
    --access-log=false --stream-budget 3s >"$W/fragcache.log" 2>&1 &
pids+=("$!")
for p in "$OP" "$VP" "$NP" "$CP"; do
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$p/static" 2>/dev/null && break; sleep 0.2; done
done

# The page's last element before </body>: when it is in, the whole page is
# (with placeholders or not).
last=$(curl -fsS "http://127.0.0.1:$OP/page?n=10&v=probe" | grep -o 'data-p="page-[0-9]*"' | tail -1)
mkdir -p "$(dirname "$OUT")"
{
    echo "# stream-s3o $(date -u +%FT%TZ) $(uname -r) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) cores=$(nproc)"
    echo "# $(go version | cut -d' ' -f3) $(nginx -v 2>&1) $(varnishd -V 2>&1 | head -1) $(chromium --version 2>/dev/null)"
    echo "round,system,measure,n,p50_ms,p90_ms,p99_ms,max_ms"
} >"$OUT"
for ((r = 1; r <= REPEAT; r++)); do
    for s in fragcache nginx varnish; do
        case $s in
            fragcache) url="http://127.0.0.1:$CP/page?n=10&v=" ;;
            nginx) url="http://127.0.0.1:$NP/ssi-page?n=10&v=" ;;
            varnish) url="http://127.0.0.1:$VP/page?n=10&v=" ;;
        esac
        "$W/streamdom" -name "$s" -url "$url" -last-part "$last" | sed "s/^/$r,/" | tee -a "$OUT"
        sleep 1
    done
done

echo
echo "medians over $REPEAT rounds (ms):"
awk -F, '!/^#/ && $1 != "round" { k = $2 "," $3; n[k]++; p50[k, n[k]] = $5; p99[k, n[k]] = $7; keys[k] = 1 }
    function med(a, k, c,   i, j, t, v) { for (i = 1; i <= c; i++) v[i] = a[k, i] + 0
        for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
        return v[int((c + 1) / 2)] }
    END { for (k in keys) printf "%-45s p50 %8.1f  p99 %8.1f\n", k, med(p50, k, n[k]), med(p99, k, n[k]) }' "$OUT" | sort
