#!/usr/bin/env bash
# Validates the deploy kit with real tools. From the repository root:
#
#   bash deploy/check.sh
#
# Installs what it needs from Debian packages when missing (prometheus for
# promtool and the server, systemd for systemd-analyze, python3-yaml, curl,
# docker-compose for its Compose schema, redis-server for the L2's Redis
# configuration), then runs every check, each bounded
# in time, and ends with one line "deploy-check: N passed, N failed, N skipped".
# Exits non-zero when a check failed. See deploy/README.md for what each does.
#
# Environment:
#   FRAGCACHE_BIN   use this fragcache binary instead of building one (the
#                   runtime checks are skipped when neither exists)
#   KEEP_TMP=1      keep the temporary directory (logs, scrape, renders)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
started=$(date +%s)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fragcache-deploy-check.XXXXXX")
touch "$tmp/pids"

cleanup() {
  local pid
  # Only the processes this script started, by the PIDs it recorded.
  while read -r pid; do
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  done <"$tmp/pids"
  sleep 0.5
  while read -r pid; do
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
  done <"$tmp/pids"
  if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ tools

PY=python3
[[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
# Go's official install location, when it is not on PATH.
command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || PATH=$PATH:/usr/local/go/bin

install_missing() {
  local need=()
  command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
  command -v systemd-analyze >/dev/null || need+=(systemd)
  command -v "$PY" >/dev/null || need+=(python3)
  "$PY" -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
  command -v curl >/dev/null || need+=(curl)
  command -v docker-compose >/dev/null || need+=(docker-compose)
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || need+=(redis-server)
  if ((${#need[@]})); then
    echo "installing from Debian: ${need[*]}"
    local t0
    t0=$(date +%s)
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${need[@]}" >"$tmp/apt.log" 2>&1 ||
      { cat "$tmp/apt.log"; exit 1; }
    echo "installed in $(($(date +%s) - t0))s"
    # The package may start its own service; no check uses it.
    if [[ " ${need[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
      systemctl stop redis-server 2>/dev/null || true
    fi
    PY=python3
    [[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3
  fi
}
install_missing

# ------------------------------------------------------------- step runner

passed=0 failed=0 skipped=0
failed_names=()

# step NAME SECONDS FUNCTION: runs FUNCTION in its own bash (set -euo
# pipefail), bounded by `timeout`; prints its last line on success and its
# whole log on failure.
step() {
  local name=$1 limit=$2 fn=$3 rc=0 t0
  t0=$(date +%s)
  timeout -k 5 "$limit" bash -c "set -euo pipefail; $fn" >"$tmp/$name.log" 2>&1 || rc=$?
  local dt=$(($(date +%s) - t0))
  if ((rc == 0)); then
    passed=$((passed + 1))
    printf 'PASS  %-22s %3ss  %s\n' "$name" "$dt" "$(tail -n 1 "$tmp/$name.log")"
    grep -E '^  (warning|note): ' "$tmp/$name.log" | sed 's/^/      /' || true
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    ((rc == 124)) && echo "(timed out after ${limit}s)" >>"$tmp/$name.log"
    printf 'FAIL  %-22s %3ss  exit %s\n' "$name" "$dt" "$rc"
    sed 's/^/      | /' "$tmp/$name.log" | tail -n 60
  fi
}

skip() {
  skipped=$((skipped + 1))
  printf 'SKIP  %-22s       %s\n' "$1" "$2"
}

C="deploy/check/checks.py"
RULES=deploy/prometheus/rules/fragcache.rules.yml
export ROOT tmp PY C RULES

# ------------------------------------------------------------ static checks

check_rules() {
  promtool check rules "$RULES"
  promtool check config deploy/prometheus/prometheus.yml
  "$PY" "$C" rules-lint
}

check_rule_tests() {
  promtool test rules deploy/prometheus/tests/*.test.yml
  echo "promtool test rules: every test passed"
}

check_prometheusrule() {
  "$PY" "$C" sync-prometheusrule --check
}

check_names() {
  "$PY" "$C" names-lint
}

# redis_cli PORT PASSWORD ARGS...: redis-cli against a loopback Redis.
redis_cli() {
  local port=$1 pw=$2
  shift 2
  REDISCLI_AUTH=$pw timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# start_redis NAME PORT PASSWORD [ARGS...]: redis-server with the kit's
# redis.conf and --requirepass, as the StatefulSet and compose start it, on
# loopback (--port and --bind override the file), in its own directory.
start_redis() {
  local name=$1 port=$2 pw=$3 _
  shift 3
  mkdir -p "$tmp/$name"
  (cd "$tmp/$name" && exec redis-server "$ROOT/deploy/kubernetes/redis/redis.conf" --requirepass "$pw" \
    --port "$port" --bind 127.0.0.1 --logfile "$tmp/$name/redis.log" "$@") >"$tmp/$name.out" 2>&1 &
  echo $! >>"$tmp/pids"
  echo $! >"$tmp/$name.pid"
  for _ in $(seq 50); do
    [[ $(redis_cli "$port" "$pw" ping 2>/dev/null) == PONG ]] && return 0
    sleep 0.2
  done
  echo "redis-server did not answer PING"; cat "$tmp/$name.out" "$tmp/$name/redis.log" 2>/dev/null
  return 1
}

# stop_redis NAME: SIGTERM, then waits for the exit.
stop_redis() {
  local pid _
  pid=$(cat "$tmp/$1.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "redis-server $pid still running"; return 1
}

# readme_acl PASSWORD: the words of deploy/README.md's ACL SETUSER rule,
# one a line, with the PASSWORD placeholder replaced.
readme_acl() {
  local rule
  rule=$(grep -m1 -o 'ACL SETUSER fragcache [^`]*' deploy/README.md) || { echo "no ACL SETUSER fragcache rule in deploy/README.md" >&2; return 1; }
  read -r -a words <<<"${rule#ACL SETUSER }"
  printf '%s\n' "${words[@]}" | sed "s/^>PASSWORD\$/>$1/"
}

check_redis_conf() {
  local port pw out i
  port=$("$PY" "$C" free-ports 1)
  pw=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
  start_redis redis-conf "$port" "$pw"
  # requirepass holds: no password, no answer.
  out=$(timeout 10 redis-cli -h 127.0.0.1 -p "$port" ping 2>&1)
  [[ $out == NOAUTH* ]] || { echo "PING without the password answered: $out"; exit 1; }
  local key want got
  for key in maxmemory-policy:volatile-lru save: appendonly:no; do
    want=${key#*:} got=$(redis_cli "$port" "$pw" config get "${key%%:*}" | tail -n 1)
    [[ $got == "$want" ]] || { echo "CONFIG GET ${key%%:*}: '$got', want '$want'"; exit 1; }
  done
  got=$(redis_cli "$port" "$pw" config get maxmemory | tail -n 1)
  ((got > 0)) || { echo "no maxmemory"; exit 1; }
  # volatile-lru under pressure: entries (with TTLs) are evicted, writes keep
  # succeeding, and the keys without a TTL (purge records, run marker;
  # DESIGN rule 27) stay.
  redis_cli "$port" "$pw" config set maxmemory 4mb >/dev/null
  redis_cli "$port" "$pw" set fragcache:v1:epoch run1 >/dev/null
  redis_cli "$port" "$pw" zadd fragcache:v1:purges 1 tag >/dev/null
  "$PY" -c '
import sys
v = "x" * 1024
for i in range(12000):
    sys.stdout.write("SET fragcache:v1:e:%d %s PX 600000\n" % (i, v))' | redis_cli "$port" "$pw" >"$tmp/redis-fill.out"
  if grep -v '^OK$' "$tmp/redis-fill.out" | head -3 | grep .; then echo "writes failed under maxmemory"; exit 1; fi
  local evicted
  evicted=$(redis_cli "$port" "$pw" info stats | tr -d '\r' | sed -n 's/^evicted_keys://p')
  ((evicted > 0)) || { echo "nothing evicted after 12 MB of writes into 4mb"; exit 1; }
  [[ $(redis_cli "$port" "$pw" exists fragcache:v1:epoch fragcache:v1:purges) == 2 ]] ||
    { echo "a key without a TTL was evicted"; exit 1; }
  # The ACL of deploy/README.md is valid Redis syntax and confines its user
  # to the prefix.
  mapfile -t acl < <(readme_acl "$pw")
  out=$(redis_cli "$port" "$pw" acl setuser "${acl[@]}" 2>&1)
  [[ $out == OK ]] || { echo "ACL SETUSER of deploy/README.md: $out"; exit 1; }
  out=$(redis_cli "$port" "$pw" --user fragcache set fragcache:v1:x 1 px 1000 2>&1)
  [[ $out == OK ]] || { echo "the README's ACL user cannot write under the prefix: $out"; exit 1; }
  out=$(redis_cli "$port" "$pw" --user fragcache set other:x 1 2>&1)
  [[ $out == *NOPERM* ]] || { echo "the README's ACL lets its user write outside the prefix: $out"; exit 1; }
  out=$(redis_cli "$port" "$pw" --user fragcache flushall 2>&1)
  [[ $out == *NOPERM* ]] || { echo "the README's ACL allows FLUSHALL: $out"; exit 1; }
  redis_cli "$port" "$pw" shutdown nosave >/dev/null 2>&1 || true
  echo "redis.conf: redis-server $(redis-server --version | sed -n 's/.*v=\([0-9.]*\).*/\1/p') accepts it with --requirepass; volatile-lru, maxmemory, no persistence; evicted $evicted entries and kept the keys without TTL; README ACL confines its user"
}

check_dashboard() {
  "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' deploy/grafana/fragcache.json
  "$PY" deploy/grafana/dashboard.py --check
  "$PY" "$C" dashboard-lint "$tmp/dashboard-queries.yml" >"$tmp/dashboard-lint.out"
  # promtool parses every dashboard query (variables substituted) as a rule.
  promtool check rules "$tmp/dashboard-queries.yml"
  cat "$tmp/dashboard-lint.out"
}

check_compose() {
  "$PY" -c 'import yaml,sys; [yaml.safe_load(open(f)) for f in sys.argv[1:]]' \
    deploy/compose/compose.yaml deploy/compose/grafana/provisioning/*/*.yaml
  # Debian's docker-compose (1.29) validates against the Compose schema of its
  # time, which predates the top-level `name:`; it is dropped for this check.
  grep -v '^name:' deploy/compose/compose.yaml >"$tmp/compose.yaml"
  docker-compose --project-directory deploy/compose -f "$tmp/compose.yaml" config -q
  # With the L2 override: valid once its two secrets are in the environment,
  # and refused while they are not.
  FRAGCACHE_REDIS_PASSWORD=check FRAGCACHE_SCOPE_SECRET=check docker-compose --project-directory deploy/compose \
    -f "$tmp/compose.yaml" -f deploy/compose/compose.l2.yaml config -q
  if env -u FRAGCACHE_REDIS_PASSWORD -u FRAGCACHE_SCOPE_SECRET docker-compose --project-directory deploy/compose \
    -f "$tmp/compose.yaml" -f deploy/compose/compose.l2.yaml config -q 2>"$tmp/compose-l2.err"; then
    echo "compose.l2.yaml is accepted without FRAGCACHE_REDIS_PASSWORD and FRAGCACHE_SCOPE_SECRET"
    exit 1
  fi
  grep -q FRAGCACHE_REDIS_PASSWORD "$tmp/compose-l2.err"
  "$PY" "$C" compose-lint
}

check_dockerfile() {
  local f=deploy/docker/Dockerfile
  grep -Eq '^FROM golang:\$\{GO_VERSION\}-bookworm AS build' "$f"
  grep -Eq '^ARG GO_VERSION=1\.[0-9]+' "$f"
  grep -Eq '^FROM gcr\.io/distroless/static-debian12:nonroot$' "$f"
  grep -q 'CGO_ENABLED=0 go build -trimpath -ldflags "[^"]*-X main.version=${VERSION}' "$f"
  grep -Eq '^USER 65532:65532$' "$f"
  grep -Eq '^EXPOSE 8080 9188$' "$f"
  grep -Eq 'CMD \["/fragcache", "healthcheck"\]' "$f"
  grep -Eq '^ENTRYPOINT \["/fragcache"\]$' "$f"
  test -f deploy/docker/Dockerfile.dockerignore
  echo "Dockerfile: pinned bases, static -trimpath build with main.version, uid 65532, ports, HEALTHCHECK"
}

check_kustomize() {
  local d kv
  kv=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p' || true)
  # base alone, the example overlay, and the example with the L2 component.
  for d in base example example-l2; do
    "$PY" "$C" render "deploy/kubernetes/$d" >"$tmp/k8s-$d.yaml"
    "$PY" "$C" k8s-lint "$tmp/k8s-$d.yaml"
    # kubectl's kustomize renders components from v4 on; Debian 12's
    # kubernetes-client (kubectl 1.20, kustomize v2) cannot.
    if [[ -n $kv ]] && ((kv >= 4)); then
      kubectl kustomize "deploy/kubernetes/$d" >"$tmp/k8s-$d.kubectl.yaml"
      "$PY" "$C" k8s-compare "$tmp/k8s-$d.yaml" "$tmp/k8s-$d.kubectl.yaml"
    fi
  done
  if [[ -n $kv ]] && ((kv >= 4)); then
    echo "kustomize: base, example and example-l2 rendered offline and by kubectl kustomize (kustomize v$kv), identical and consistent"
  else
    echo "kustomize: base, example and example-l2 rendered offline and consistent (no kubectl with kustomize >= v4 here)"
  fi
}

check_config_files() {
  "$PY" "$C" config-keys deploy/systemd/fragcache.env deploy/kubernetes/base/fragcache.yaml \
    deploy/kubernetes/example/fragcache.yaml
}

check_systemd() {
  # systemd-analyze verify wants ExecStart= and EnvironmentFile= to exist:
  # the unit is checked as a copy pointing into a temporary root.
  local r=$tmp/systemd-root
  mkdir -p "$r/usr/local/bin" "$r/etc/fragcache"
  if [[ -x $tmp/fragcache ]]; then cp "$tmp/fragcache" "$r/usr/local/bin/fragcache"
  else cp "$(type -P true)" "$r/usr/local/bin/fragcache"; echo "(no fragcache binary: a stand-in executable)"; fi
  cp deploy/systemd/fragcache.env "$r/etc/fragcache/fragcache.env"
  sed -e "s#/usr/local/bin/fragcache#$r/usr/local/bin/fragcache#" \
    -e "s#/etc/fragcache/fragcache.env#$r/etc/fragcache/fragcache.env#" \
    deploy/systemd/fragcache.service >"$r/fragcache.service"
  systemd-analyze verify "$r/fragcache.service"
  ! grep -q '^ExecReload=' deploy/systemd/fragcache.service
  local score
  score=$(systemd-analyze security --offline=true "$r/fragcache.service" 2>&1 |
    sed -n 's/.*Overall exposure level for fragcache.service: \([0-9.]*\).*/\1/p')
  echo "exposure: $score"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
  echo "systemd-analyze verify: ok; security exposure $score (limit 2.0)"
}

export -f check_rules check_rule_tests check_prometheusrule check_dashboard check_compose \
  check_dockerfile check_kustomize check_config_files check_systemd check_names redis_cli start_redis \
  stop_redis readme_acl check_redis_conf

# ----------------------------------------------------------- runtime checks

VERSION=deploy-check
export VERSION

build_binary() {
  if [[ -n ${FRAGCACHE_BIN:-} ]]; then
    cp "$FRAGCACHE_BIN" "$tmp/fragcache"
    echo "using FRAGCACHE_BIN=$FRAGCACHE_BIN"
    return
  fi
  # The same build as deploy/docker/Dockerfile.
  CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$VERSION" -o "$tmp/fragcache" .
  echo "built fragcache with -X main.version=$VERSION"
}

# wait_http URL STATUS SECONDS: polls until URL answers STATUS.
wait_http() {
  local url=$1 want=$2 deadline=$(($(date +%s) + $3)) got
  while (($(date +%s) < deadline)); do
    got=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" || true)
    [[ $got == "$want" ]] && return 0
    sleep 0.2
  done
  echo "timed out waiting for $url to answer $want (last: ${got:-none})"
  return 1
}

# start NAME CMD...: starts a server in the background, records its PID.
start() {
  local name=$1
  shift
  "$@" >"$tmp/$name.out" 2>&1 &
  echo $! >>"$tmp/pids"
  echo $! >"$tmp/$name.pid"
}

start_fragcache() {
  start fragcache "$tmp/fragcache" --demo --listen "127.0.0.1:$FRONT" --admin-listen "127.0.0.1:$ADMIN" \
    --drain-delay 2s --shutdown-timeout 5s
  wait_http "http://127.0.0.1:$ADMIN/readyz" 200 30 || { cat "$tmp/fragcache.out"; exit 1; }
  wait_http "http://127.0.0.1:$ADMIN/livez" 200 5
  # The image's HEALTHCHECK: exit 0 against the running admin port ...
  FRAGCACHE_ADMIN_LISTEN="127.0.0.1:$ADMIN" timeout 10 "$tmp/fragcache" healthcheck
  # ... and non-zero against a port nobody listens on.
  if FRAGCACHE_ADMIN_LISTEN="127.0.0.1:$SPARE" timeout 10 "$tmp/fragcache" healthcheck; then
    echo "healthcheck succeeded against a closed port"
    exit 1
  fi
  echo "fragcache --demo ready on 127.0.0.1:$FRONT (admin $ADMIN); healthcheck exits 0 / non-zero as it should"
}

drive_traffic() {
  local _
  # Concurrent first requests (misses, coalescing, placeholders), a login
  # (cookie variable), the choose branches; then again once the slow
  # fragments (about 1s and 3s) are done (hits).
  for _ in 1 2 3 4; do curl -s -o /dev/null -m 10 "http://127.0.0.1:$FRONT/" & done
  wait
  curl -s -o /dev/null -m 10 -c "$tmp/cookies" "http://127.0.0.1:$FRONT/login?name=check"
  curl -s -o /dev/null -m 10 -b "$tmp/cookies" "http://127.0.0.1:$FRONT/?tab=orders"
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$FRONT/?tab=report"
  sleep 3.5
  for _ in 1 2 3; do curl -s -o /dev/null -m 10 "http://127.0.0.1:$FRONT/"; done
  curl -s -o /dev/null -m 10 -b "$tmp/cookies" "http://127.0.0.1:$FRONT/"
  echo "sent demo traffic: 10 page requests"
}

check_scrape() {
  curl -sf -m 10 "http://127.0.0.1:$ADMIN/metrics" >"$tmp/scrape.txt"
  promtool check metrics <"$tmp/scrape.txt"
  echo "promtool check metrics: ok ($(grep -c '^# TYPE' "$tmp/scrape.txt") families)"
  "$PY" "$C" scrape-check "$tmp/scrape.txt" "$VERSION"
}

# prom_query EXPR: prints the number of series the instant query returns.
prom_query() {
  curl -sf -m 5 --get --data-urlencode "query=$1" "http://127.0.0.1:$PROM/api/v1/query" |
    "$PY" -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="success"; print(len(d["data"]["result"]))'
}

# wait_series EXPR SECONDS: polls until the query returns at least one series.
wait_series() {
  local deadline=$(($(date +%s) + $2)) n
  while (($(date +%s) < deadline)); do
    n=$(prom_query "$1" || echo 0)
    ((n > 0)) && { echo "  $1: $n series"; return 0; }
    sleep 1
  done
  echo "no series for $1 after $2s"
  return 1
}

check_prometheus() {
  mkdir -p "$tmp/prom-data"
  cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/$RULES
scrape_configs:
  - job_name: fragcache
    static_configs:
      - targets: ["127.0.0.1:$ADMIN"]
EOF
  promtool check config "$tmp/prometheus.yml" >/dev/null
  start prometheus prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom-data" \
    --web.listen-address="127.0.0.1:$PROM" --storage.tsdb.retention.time=1h
  wait_http "http://127.0.0.1:$PROM/-/ready" 200 60 || { tail -20 "$tmp/prometheus.out"; exit 1; }
  wait_series 'up{job="fragcache"} == 1' 30
  wait_series 'fragcache_build_info' 30
  # Traffic between scrapes, so rates and the recording rules have data.
  local _
  for _ in 1 2 3 4 5; do curl -s -o /dev/null -m 10 "http://127.0.0.1:$FRONT/"; sleep 0.5; done
  wait_series 'job:fragcache_http_requests:rate5m' 30
  # Every rule loaded and evaluated without error.
  curl -sf -m 5 "http://127.0.0.1:$PROM/api/v1/rules" | "$PY" -c '
import json, sys
groups = json.load(sys.stdin)["data"]["groups"]
rules = [r for g in groups for r in g["rules"]]
bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") != "ok"]
assert rules and not bad, bad
print("  %d rules loaded, all healthy" % len(rules))'
  echo "prometheus $(prometheus --version 2>&1 | awk 'NR==1{print $3}') on 127.0.0.1:$PROM scraped fragcache; up, build_info and recorded series present"
}

check_drain() {
  local pid
  pid=$(cat "$tmp/fragcache.pid")
  kill -TERM "$pid"
  # Drain: /readyz answers 503 while the process still serves ...
  wait_http "http://127.0.0.1:$ADMIN/readyz" 503 2
  curl -sf -o /dev/null -m 5 "http://127.0.0.1:$FRONT/"
  # ... then it exits by itself within drain-delay + shutdown-timeout (2s + 5s).
  local deadline=$(($(date +%s) + 12))
  while kill -0 "$pid" 2>/dev/null && (($(date +%s) < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then echo "still running 12s after SIGTERM"; exit 1; fi
  echo "SIGTERM: /readyz 503 while still serving, exited within drain-delay + shutdown-timeout"
}

check_configs_start() {
  # The shipped configurations start a real fragcache (unknown keys and bad
  # values are start-up errors). Listeners are moved to free loopback ports.
  start cfg-yaml "$tmp/fragcache" --config deploy/kubernetes/example/fragcache.yaml \
    --listen "127.0.0.1:$CFG_FRONT" --admin-listen "127.0.0.1:$CFG_ADMIN"
  wait_http "http://127.0.0.1:$CFG_ADMIN/livez" 200 20 || { cat "$tmp/cfg-yaml.out"; exit 1; }
  kill "$(cat "$tmp/cfg-yaml.pid")"
  wait_http "http://127.0.0.1:$CFG_ADMIN/livez" 000 20
  local vars
  mapfile -t vars < <(grep -E '^[A-Z_]+=' deploy/systemd/fragcache.env | grep -v -e '_LISTEN=')
  start cfg-env env "${vars[@]}" \
    FRAGCACHE_LISTEN="127.0.0.1:$CFG_FRONT" FRAGCACHE_ADMIN_LISTEN="127.0.0.1:$CFG_ADMIN" "$tmp/fragcache"
  wait_http "http://127.0.0.1:$CFG_ADMIN/livez" 200 20 || { cat "$tmp/cfg-env.out"; exit 1; }
  kill "$(cat "$tmp/cfg-env.pid")"
  echo "started with the example ConfigMap's YAML and with the systemd env file"
}

# l2_sum FILE NAME [LABEL=VALUE|LABEL=~RE ...]: a scrape's sum of NAME's matching samples.
l2_sum() {
  "$PY" "$C" metric-sum "$@"
}

# l2_scrape N: scrapes replica N of the l2 step into $tmp/l2-scrape-N.txt.
l2_scrape() {
  local port
  port=$(cat "$tmp/l2-admin-$1")
  curl -sf -m 5 "http://127.0.0.1:$port/metrics" >"$tmp/l2-scrape-$1.txt"
}

# l2_pages N COUNT TAG: COUNT pages from replica N, each as a new user (new
# user-scoped keys: L1 misses that reach the L2); every one must be 200.
l2_pages() {
  local port code i
  port=$(cat "$tmp/l2-front-$1")
  for ((i = 0; i < $2; i++)); do
    code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' -b "demo_user=$3-$i" "http://127.0.0.1:$port/?tab=orders")
    [[ $code == 200 ]] || { echo "replica $1 answered $code (user $3-$i)" >&2; return 1; }
  done
}

# l2_wait_up N VALUE SECONDS: drives pages through replica N until its
# fragcache_l2_up is VALUE; prints how long it took.
l2_wait_up() {
  local t0 deadline got round=0
  t0=$(date +%s%N)
  deadline=$(($(date +%s) + $3))
  while (($(date +%s) < deadline)); do
    l2_pages "$1" 2 "wait$2-$round" || return 1
    round=$((round + 1))
    l2_scrape "$1"
    got=$(l2_sum "$tmp/l2-scrape-$1.txt" fragcache_l2_up)
    if [[ $got == "$2" ]]; then
      echo "$((($(date +%s%N) - t0) / 1000000))"
      return 0
    fi
    sleep 0.2
  done
  echo "replica $1: fragcache_l2_up is ${got:-absent} after $3s, want $2" >&2
  return 1
}

check_l2() {
  local rport dport pw ss i n ms
  read -r rport dport F1 A1 F2 A2 <<<"$("$PY" "$C" free-ports 6)"
  echo "$F1" >"$tmp/l2-front-1"; echo "$A1" >"$tmp/l2-admin-1"
  echo "$F2" >"$tmp/l2-front-2"; echo "$A2" >"$tmp/l2-admin-2"
  pw=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
  ss=$("$PY" -c 'import secrets; print(secrets.token_hex(32))')
  # Redis as the kit runs it, with the README's ACL user for fragcache.
  mapfile -t acl < <(readme_acl "$pw")
  start_redis l2-redis "$rport" "$pw" --user "${acl[@]}"
  # One upstream for both replicas (as in compose), so they share keys.
  start l2-demo "$tmp/fragcache" demo --listen "127.0.0.1:$dport"
  wait_http "http://127.0.0.1:$dport/" 200 20
  for i in 1 2; do
    start "l2-fc$i" env FRAGCACHE_REDIS="redis://fragcache@127.0.0.1:$rport/0" FRAGCACHE_REDIS_PASSWORD="$pw" \
      FRAGCACHE_SCOPE_SECRET="$ss" FRAGCACHE_REDIS_TIMEOUT=250ms \
      "$tmp/fragcache" --upstream "http://127.0.0.1:$dport" --esi-cookie demo_user \
      --listen "127.0.0.1:$(cat "$tmp/l2-front-$i")" --admin-listen "127.0.0.1:$(cat "$tmp/l2-admin-$i")"
  done
  for i in 1 2; do
    wait_http "http://127.0.0.1:$(cat "$tmp/l2-admin-$i")/readyz" 200 30 || { cat "$tmp/l2-fc$i.out"; exit 1; }
  done
  # Replica 1 fetches and fills (the slow fragments take about 1s and 3s).
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$F1/"
  sleep 3.5
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$F1/"
  # Replica 2's first page reads what replica 1 stored.
  curl -s -o /dev/null -m 10 "http://127.0.0.1:$F2/"
  for i in 1 2; do
    l2_scrape "$i"
    "$PY" "$C" l2-scrape "$tmp/l2-scrape-$i.txt"
    [[ $(l2_sum "$tmp/l2-scrape-$i.txt" fragcache_l2_up) == 1 ]] || { echo "replica $i: fragcache_l2_up is not 1"; exit 1; }
    n=$(l2_sum "$tmp/l2-scrape-$i.txt" fragcache_l2_requests_total 'result=~error|timeout|breaker_open')
    [[ $n == 0 ]] || { echo "replica $i: $n L2 requests failed (is the README's ACL enough?)"; grep '^fragcache_l2_requests_total' "$tmp/l2-scrape-$i.txt" | grep -v ' 0$'; exit 1; }
  done
  n=$(l2_sum "$tmp/l2-scrape-2.txt" fragcache_l2_requests_total op=get 'result=~hit|stale')
  [[ $n != 0 ]] || { echo "replica 2 found nothing in the L2 of what replica 1 fetched"; grep '^fragcache_l2_requests_total' "$tmp/l2-scrape-2.txt" | grep -v ' 0$'; exit 1; }
  echo "  two replicas as the README's ACL user: L2 families present, l2_up 1, no failed request; replica 2 had $n L2 hits from replica 1's fetches"
  # Redis stops: pages keep coming, readiness holds, the L2 is reported down.
  stop_redis l2-redis
  ms=$(l2_wait_up 1 0 15)
  l2_pages 1 5 down
  l2_pages 2 5 down
  for i in 1 2; do
    [[ $(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$(cat "$tmp/l2-admin-$i")/readyz") == 200 ]] ||
      { echo "replica $i: /readyz is not 200 with Redis down"; exit 1; }
  done
  echo "  Redis stopped: every page 200, /readyz 200 on both, fragcache_l2_up 0 after ${ms}ms"
  # Redis is back: the L2 is used again.
  start_redis l2-redis "$rport" "$pw" --user "${acl[@]}"
  ms=$(l2_wait_up 1 1 10)
  echo "l2: shared fills between two replicas; Redis down costs no page and no readiness; back in use ${ms}ms after Redis restarted"
}

export -f build_binary wait_http start start_fragcache drive_traffic check_scrape prom_query \
  wait_series check_prometheus check_drain check_configs_start l2_sum l2_scrape l2_pages l2_wait_up check_l2

# ------------------------------------------------------------------- run

echo "== static checks"
step promtool-rules 60 check_rules
step promtool-test-rules 60 check_rule_tests
step prometheusrule-sync 30 check_prometheusrule
step dashboard 60 check_dashboard
step metric-names 30 check_names
step compose 60 check_compose
step dockerfile 10 check_dockerfile
step kustomize 60 check_kustomize
step config-files 30 check_config_files
step redis-conf 60 check_redis_conf

echo "== runtime checks"
if [[ -z ${FRAGCACHE_BIN:-} ]] && ! compgen -G '*.go' >/dev/null; then
  skip build "no Go main package at the repository root yet"
  step systemd 60 check_systemd
  skip runtime "no fragcache binary: scrape, promtool check metrics, names, Prometheus, drain"
else
  step build 300 build_binary
  step systemd 60 check_systemd
  if [[ -x $tmp/fragcache ]]; then
    read -r FRONT ADMIN PROM SPARE CFG_FRONT CFG_ADMIN <<<"$("$PY" "$C" free-ports 6)"
    export FRONT ADMIN PROM SPARE CFG_FRONT CFG_ADMIN
    step fragcache-start 60 start_fragcache
    if [[ -s $tmp/fragcache.pid ]] && kill -0 "$(cat "$tmp/fragcache.pid")" 2>/dev/null; then
      step demo-traffic 60 drive_traffic
      step metrics-scrape 30 check_scrape
      step prometheus 150 check_prometheus
      step drain 30 check_drain
      step config-start 60 check_configs_start
      # Not a pipe into grep -q: with pipefail, grep's early exit would
      # fail the pipeline (SIGPIPE) and the step would be skipped.

      help=$("$tmp/fragcache" --help 2>&1 || true)
      if [[ $help == *--redis-timeout* ]]; then
        step l2 150 check_l2
      else
        skip l2 "this fragcache has no --redis yet: the L2 wiring is not built"
      fi
    else
      skip runtime "fragcache did not start"
    fi
  fi
fi

echo "deploy-check finished in $(($(date +%s) - started))s"
((failed == 0)) || echo "failed: ${failed_names[*]}"
echo "deploy-check: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
