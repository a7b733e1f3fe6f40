#!/usr/bin/env bash
# curves-plot.sh: the medians of curves.sh's rounds, as a CSV and as four
# PNGs under docs/ (gnuplot, pngcairo).
#
#   bash docs/bench/curves-plot.sh [results.csv]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
IN=${1:-$HERE/results/curves.csv}
MED=${IN%.csv}-medians.csv
DOCS=$(cd "$HERE/.." && pwd)
command -v gnuplot >/dev/null || { echo "gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 2; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# part,x,system and the median of each measured column over the rounds
awk -F, '
    /^#/ || $1 == "part" { next }
    { k = $1 "," $2 "," $4; if (!(k in n)) order[++keys] = k; n[k]++
      for (c = 5; c <= 14; c++) v[k, c, n[k]] = $c }
    function med(k, c,   i, j, t, a, m) { m = n[k]; if (v[k, c, 1] == "") return ""
        for (i = 1; i <= m; i++) a[i] = v[k, c, i] + 0
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((m + 1) / 2)] }
    END { print "part,x,system,rounds,rps,p50_ms,p99_ms,page_bytes,mb_s,cpu_us_page,cpu_us_include,errors,mem_bytes_per_frag,disk_bytes_per_frag"
        for (i = 1; i <= keys; i++) { k = order[i]; line = k "," n[k]
            for (c = 5; c <= 14; c++) line = line "," med(k, c); print line } }' "$IN" >"$MED"
echo "medians: $MED"

for part in includes size population conns; do
    for s in fragcache nginx varnish; do
        awk -F, -v p="$part" -v s="$s" '$1 == p && $3 == s { $1 = $1; print }' OFS=' ' "$MED" | sort -n -k2 >"$W/$part-$s.dat"
    done
done
# columns in the .dat files: 1 part 2 x 3 system 4 rounds 5 rps 6 p50 7 p99
# 8 page_bytes 9 mb_s 10 cpu_us_page 11 cpu_us_include 12 errors 13 mem 14 disk
cd "$W"
gnuplot <<EOF
set terminal pngcairo size 1200,460 font "DejaVu Sans,11"
set style data linespoints
set grid
set key top right
set logscale x 10
L = "lw 2 pt 7 ps 1.2"
fc = "lc rgb '#1f77b4'"; ng = "lc rgb '#2ca02c'"; va = "lc rgb '#d62728'"

set output "$DOCS/curve-includes.png"
set multiplot layout 1,2 title "Warm page, includes per page (50 connections, median of rounds)"
set xlabel "includes per page"
set ylabel "pages per second"
set logscale y 10
plot "includes-fragcache.dat" u 2:5 t "fragcache" @L @fc, "includes-nginx.dat" u 2:5 t "nginx SSI" @L @ng, "includes-varnish.dat" u 2:5 t "Varnish ESI" @L @va
set ylabel "proxy CPU per include (us)"
plot "includes-fragcache.dat" u 2:11 t "fragcache" @L @fc, "includes-nginx.dat" u 2:11 t "nginx SSI" @L @ng, "includes-varnish.dat" u 2:11 t "Varnish ESI" @L @va
unset multiplot

set output "$DOCS/curve-size.png"
set key top left
set multiplot layout 1,2 title "Page size with 10 includes (50 connections, median of rounds)"
set xlabel "page size (KB, before composing)"
unset logscale y
set ylabel "MB per second composed"
plot "size-fragcache.dat" u 2:9 t "fragcache" @L @fc, "size-nginx.dat" u 2:9 t "nginx SSI" @L @ng, "size-varnish.dat" u 2:9 t "Varnish ESI" @L @va
set logscale y 10
set ylabel "proxy CPU per page (us)"
plot "size-fragcache.dat" u 2:10 t "fragcache" @L @fc, "size-nginx.dat" u 2:10 t "nginx SSI" @L @ng, "size-varnish.dat" u 2:10 t "Varnish ESI" @L @va
unset multiplot

set output "$DOCS/curve-population.png"
set multiplot layout 1,2 title "Distinct cached fragments of 1 KiB (pages of 100 includes, a random page per request)"
set xlabel "fragments in the cache"
unset logscale y
set yrange [0:*]
set ylabel "proxy CPU per include hit (us)"
plot "population-fragcache.dat" u 2:11 t "fragcache" @L @fc, "population-nginx.dat" u 2:11 t "nginx SSI" @L @ng, "population-varnish.dat" u 2:11 t "Varnish ESI" @L @va
set ylabel "bytes per fragment"
plot "population-fragcache.dat" u 2:13 t "fragcache (Pss)" @L @fc, "population-nginx.dat" u 2:13 t "nginx SSI (Pss)" @L @ng, \
     "population-nginx.dat" u 2:14 t "nginx SSI (cache files)" @L @ng dt 2, "population-varnish.dat" u 2:13 t "Varnish ESI (Pss)" @L @va
unset multiplot
set yrange [*:*]

set output "$DOCS/curve-conns.png"
set key bottom right
set multiplot layout 1,2 title "Connections on the warm 10-include page (median of rounds)"
set xlabel "connections"
set ylabel "pages per second"
unset logscale y
set yrange [0:*]
plot "conns-fragcache.dat" u 2:5 t "fragcache" @L @fc, "conns-nginx.dat" u 2:5 t "nginx SSI" @L @ng, "conns-varnish.dat" u 2:5 t "Varnish ESI" @L @va
set yrange [*:*]
set logscale y 10
set key top left
set ylabel "p99 latency (ms)"
plot "conns-fragcache.dat" u 2:7 t "fragcache" @L @fc, "conns-nginx.dat" u 2:7 t "nginx SSI" @L @ng, "conns-varnish.dat" u 2:7 t "Varnish ESI" @L @va
unset multiplot
EOF
echo "plots: $DOCS/curve-{includes,size,population,conns}.png"
