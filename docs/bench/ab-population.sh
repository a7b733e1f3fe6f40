#!/usr/bin/env bash
# ab-population.sh: two fragcache builds side by side on the population
# scenario of curves.sh (pages of 100 includes, a random page of PAGES per
# request, so PAGES*100 distinct cached fragments), rounds interleaved so
# that the machine's drift falls on both alike.
#
#   bash docs/bench/ab-population.sh OLD_BINARY NEW_BINARY [PAGES]
#
# ROUNDS (5) rounds of 8 s of `wrk -t2 -c50` each; prints pages/s and CPU
# per include of each round, and the median ratio NEW/OLD. Loopback only;
# everything it starts it stops again, by PID.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BENCH=${BENCH:-$HERE/../../../shared/bench}
ROUNDS=${ROUNDS:-5} DUR=${DUR:-8}
(($# >= 2)) || { echo "usage: $0 OLD_BINARY NEW_BINARY [PAGES]" >&2; exit 2; }
PAGES=${3:-1000}
OP=24780 PORTS=(24781 24782)
W=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT INT TERM
(cd "$BENCH/origin" && GOFLAGS='' go build -o "$W/origin" .)
(cd "$HERE/../.." && go build -o "$W/curvetool" ./docs/bench/curvetool)
"$W/origin" -listen "127.0.0.1:$OP" -frag-max-age 3600 >"$W/origin.log" 2>&1 &
pids+=("$!")
bins=("$1" "$2") procs=()
for k in 0 1; do
    "${bins[$k]}" --listen "127.0.0.1:${PORTS[$k]}" --upstream "http://127.0.0.1:$OP" --admin-listen "127.0.0.1:$((PORTS[k] + 100))" \
        --access-log=false --cache-size 3g --wait 2s >"$W/fc$k.log" 2>&1 &
    pids+=("$!"); procs+=("$!")
done
sleep 1
cat >"$W/pop.lua" <<EOL
init = function(args) math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000) end
request = function() return wrk.format("GET", "/page?n=100&v=f" .. math.random(0, $PAGES - 1)) end
EOL
for k in 0 1; do "$W/curvetool" fill -base "http://127.0.0.1:${PORTS[$k]}" -n 100 -pages "$PAGES" -conc 8; done
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -a ratio=()
for ((r = 1; r <= ROUNDS; r++)); do
    declare -a rps=()
    for k in 0 1; do
        url="http://127.0.0.1:${PORTS[$k]}/page"
        wrk -t2 -c50 -d2s -s "$W/pop.lua" "$url" >/dev/null
        t0=$(ticks "${procs[$k]}")
        out=$(wrk -t2 -c50 -d"${DUR}s" -s "$W/pop.lua" "$url")
        t1=$(ticks "${procs[$k]}")
        n=$(awk '/requests in/{print $1}' <<<"$out")
        rps[$k]=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        awk -v r="$r" -v b="${bins[$k]}" -v rps="${rps[$k]}" -v c=$((t1 - t0)) -v n="$n" -v hz="$hz" \
            'BEGIN { printf "round %d  %-28s pages/s %7.0f  CPU per include %5.2f us\n", r, b, rps, c * 1e6 / hz / n / 100 }'
    done
    ratio[$r]=$(awk -v a="${rps[0]}" -v b="${rps[1]}" 'BEGIN { printf "%.3f", b / a }')
done
printf '%s\n' "${ratio[@]}" | sort -n | awk '{ v[NR] = $1 } END { printf "median pages/s ratio new/old: %.2fx (rounds: %d)\n", v[int((NR + 1) / 2)], NR }'
