#!/usr/bin/env python3
"""Checks of the deploy kit that no packaged tool does; called by deploy/check.sh.

Needs python3 and PyYAML (Debian: python3-yaml). Paths are relative to the
repository root. Every subcommand prints one summary line on success and
exits non-zero with the reasons on failure.

  rules-lint                  alerts carry severity/summary/description; every alert has a
                              firing and a non-firing promtool test; recorded names used exist
  sync-prometheusrule [--check]  write (or compare) the PrometheusRule from the rules file
  dashboard-lint OUT_RULES    dashboard structure; writes its queries as a rules file so that
                              `promtool check rules` parses every PromQL expression
  compose-lint                pinned images, health checks, loopback ports, mounted paths exist
  render DIR                  offline kustomize: render DIR's kustomization to stdout (resources,
                              components, ConfigMap generators, JSON patches, images, namespace)
  k8s-lint RENDERED           semantic checks of a rendered manifest stream (and of the L2's Redis)
  k8s-compare A B             two renders hold the same objects (generated-name hashes included)
  used-names                  metric names used by the dashboard and the rules
  names-lint                  those names are the design's (METRICS, L2_METRICS) or recorded, and
                              the label values they match are the design's (LABEL_VALUES)
  scrape-check SCRAPE VERSION every used name exists in the scrape (see METRICS below)
  config-keys FILE...         YAML config / env files use only known settings
  free-ports N                N free loopback TCP ports
  metric-sum SCRAPE NAME [L=V|L=~RE ...]  sum of NAME's matching samples in a scrape
  l2-scrape SCRAPE            the L2 families are in a scrape, with their types
"""
import copy
import hashlib
import json
import os
import re
import socket
import sys

import yaml

ROOT = os.getcwd()
RULES = "deploy/prometheus/rules/fragcache.rules.yml"
RULE_TESTS = "deploy/prometheus/tests/fragcache.rules.test.yml"
PROMRULE = "deploy/kubernetes/monitoring/prometheusrule.yaml"
DASHBOARD = "deploy/grafana/fragcache.json"
COMPOSE = "deploy/compose/compose.yaml"
COMPOSE_L2 = "deploy/compose/compose.l2.yaml"
REDIS_CONF = "deploy/kubernetes/redis/redis.conf"

# Settings of the "Command line" section of the design (snake_case YAML keys;
# FRAGCACHE_<UPPER> variables). --demo and --version are flags only; --config
# has no YAML key.
SETTINGS = """listen upstream admin_listen wait fragment_ttl stale_ttl fetch_timeout cache_size
allow_host esi_cookie max_depth max_includes esi_trigger max_wait upstream_timeout max_page_size
max_fragment_size max_header_bytes fetch_concurrency fetch_per_host refresh_queue scope_secret
public_host shutdown_timeout drain_delay access_log pprof log_format
redis redis_prefix redis_timeout""".split()
YAML_ONLY = ["fragments"]
ENV_ONLY = ["config"]
# Secrets with an environment form only (DESIGN rule 24).
SECRET_ENV = ["FRAGCACHE_REDIS_PASSWORD", "FRAGCACHE_PURGE_TOKEN"]

# METRICS: the fragcache_* families of the design's "Metrics" section, plus the
# circuit breaker's gauge. Families with labels (a *Vec in client_golang) are
# printed, HELP and TYPE included, only once a child exists: check.sh drives
# demo traffic first so that most appear; those in MAY_BE_ABSENT need events
# the demo may not produce, and are tolerated when absent from the scrape
# (reported as a warning) as long as they are in this list. Any other used
# name must be in the scrape.
METRICS = {
    "fragcache_http_requests_total": "counter",
    "fragcache_http_request_duration_seconds": "histogram",
    "fragcache_http_requests_in_flight": "gauge",
    "fragcache_page_compositions_total": "counter",
    "fragcache_page_includes": "histogram",
    "fragcache_fragment_lookups_total": "counter",
    "fragcache_fragment_fallbacks_total": "counter",
    "fragcache_fragment_coalesced_total": "counter",
    "fragcache_fragment_fetches_total": "counter",
    "fragcache_upstream_breaker_state": "gauge",
    "fragcache_upstream_request_duration_seconds": "histogram",
    "fragcache_upstream_requests_in_flight": "gauge",
    "fragcache_refresh_queue_length": "gauge",
    "fragcache_refresh_dropped_total": "counter",
    "fragcache_cache_cost_bytes": "gauge",
    "fragcache_cache_max_cost_bytes": "gauge",
    "fragcache_cache_evictions_total": "counter",
    "fragcache_cache_sets_rejected_total": "counter",
    "fragcache_cache_sets_dropped_total": "counter",
    "fragcache_esi_errors_total": "counter",
    "fragcache_build_info": "gauge",
}
# fragcache resolves every labelled child at start-up, so every series is
# in the first scrape; nothing may be absent.
MAY_BE_ABSENT: set[str] = set()
# The shared L2's families (DESIGN "Beyond one machine", labels by rule 38).
# A process started without --redis need not export them, so the plain
# scrape may lack them; check.sh's l2 step requires them of a process with
# --redis.
L2_METRICS = {
    "fragcache_l2_requests_total": "counter",
    "fragcache_l2_request_duration_seconds": "histogram",
    "fragcache_l2_up": "gauge",
    "fragcache_l2_lock_waits_total": "counter",
}
# Label values the design names, per family and label: a query matching
# another value (a typo, a value the design does not have) selects nothing.
LABEL_VALUES = {
    "fragcache_fragment_lookups_total": {"result": "hit updating stale miss bypass"},
    "fragcache_fragment_fallbacks_total": {"action": "placeholder alt except removed"},
    "fragcache_fragment_fetches_total": {
        "trigger": "foreground background",
        "result": "success status_error timeout connect_error too_large denied"},
    "fragcache_page_compositions_total": {"outcome": "complete degraded"},
    "fragcache_l2_requests_total": {
        "op": "get set lock unlock publish purge",
        "result": "hit miss stale error timeout corrupt breaker_open"},
    "fragcache_l2_request_duration_seconds": {"op": "get set lock unlock publish purge"},
    "fragcache_l2_lock_waits_total": {"result": "filled failed expired timeout"},
}
# Families of client_golang's Go and process collectors (DESIGN: "plus the
# Go and process collectors").
COLLECTOR_PREFIXES = ("go_", "process_")
# Series Prometheus makes itself, not found in a scrape.
SYNTHETIC = {"up", "scrape_duration_seconds", "ALERTS", "ALERTS_FOR_STATE"}

SUFFIXES = ("_bucket", "_sum", "_count")


def fail(errors, what):
    if errors:
        for e in errors:
            print("  - " + e, file=sys.stderr)
        sys.exit(f"{what}: {len(errors)} problem(s)")


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# ---------------------------------------------------------------- PromQL names

NAME_RE = re.compile(r"(?<![\w:.\"$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "le", "inf", "nan", "Inf", "NaN",
}


def strip_promql(expr):
    """Drops string literals, label matchers, durations and grouping lists."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    return expr


def metric_names(expr):
    """Metric (and recorded series) names an expression selects."""
    s = strip_promql(expr)
    names = set()
    for m in NAME_RE.finditer(s):
        tok = m.group(1)
        rest = s[m.end():].lstrip()
        if rest.startswith("("):  # a function or aggregation
            continue
        if tok in PROMQL_WORDS or re.fullmatch(r"\d.*", tok):
            continue
        names.add(tok)
    return names


def grafana_exprs(dash):
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q.strip())
            out.append(("variable " + v["name"], m.group(1) if m else q))
    return out


def substitute_vars(expr):
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def rule_exprs(groups):
    for g in groups:
        for r in g["rules"]:
            yield r, r["expr"]


def used_names():
    """name -> set of places that use it."""
    used = {}
    for r, expr in rule_exprs(load_yaml(RULES)["groups"]):
        where = "alert " + r["alert"] if "alert" in r else "rule " + r["record"]
        for n in metric_names(expr):
            used.setdefault(n, set()).add(where)
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    for title, expr in grafana_exprs(dash):
        for n in metric_names(substitute_vars(expr)):
            used.setdefault(n, set()).add("panel " + title)
    return used


SELECTOR_RE = re.compile(r"\b(fragcache_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def used_selectors():
    """(place, family, label, op, value) of every label matcher on a fragcache_* series."""
    out = []
    exprs = [("alert " + r["alert"] if "alert" in r else "rule " + r["record"], e)
             for r, e in rule_exprs(load_yaml(RULES)["groups"])]
    with open(DASHBOARD, encoding="utf-8") as f:
        exprs += [("panel " + t, substitute_vars(e)) for t, e in grafana_exprs(json.load(f))]
    for where, expr in exprs:
        for m in SELECTOR_RE.finditer(expr):
            name = m.group(1)
            for s in SUFFIXES:
                if name.endswith(s) and name[: -len(s)] in LABEL_VALUES:
                    name = name[: -len(s)]
            for lm in MATCHER_RE.finditer(m.group(2)):
                out.append((where, name, lm.group(1), lm.group(2), lm.group(3)))
    return out


def cmd_names_lint(_args):
    """Every name the rules and the dashboard use is the design's (or a
    recorded series, or the Go/process collectors'), and every label value
    they match on is one the design names."""
    errors = []
    groups = load_yaml(RULES)["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    design = set(METRICS) | set(L2_METRICS)
    used = used_names()
    for n, where in sorted(used.items()):
        base = n
        for s in SUFFIXES:
            if n.endswith(s) and n[: -len(s)] in design:
                base = n[: -len(s)]
        if base in design or n in recorded or n in SYNTHETIC or n.startswith(COLLECTOR_PREFIXES):
            continue
        errors.append(f"{n} (used by {', '.join(sorted(where))}) is not in the design's metric list")
    for name, typ in {**METRICS, **L2_METRICS}.items():
        for s in ("_bucket", "_sum", "_count"):
            if typ != "histogram" and name + s in used:
                errors.append(f"{name + s} used, but {name} is a {typ}")
    checked = 0
    for where, fam, label, op, value in used_selectors():
        allowed = LABEL_VALUES.get(fam, {}).get(label)
        if allowed is None:
            continue
        allowed = set(allowed.split())
        if op in ("=~", "!~"):
            if not re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", value):
                errors.append(f"{where}: {fam}{{{label}{op}\"{value}\"}}: only plain alternations are checked")
                continue
            values = value.split("|")
        else:
            values = [value]
        for v in values:
            checked += 1
            if v not in allowed:
                errors.append(f"{where}: {fam}{{{label}{op}\"{value}\"}}: {v!r} is not a value of {label} "
                              f"in the design ({', '.join(sorted(allowed))})")
    fail(errors, "names-lint")
    print(f"names-lint: {len(used)} names used by rules and dashboard are the design's, recorded, or the "
          f"Go/process collectors'; {checked} label values are the design's")


# ------------------------------------------------------------------------ rules

def cmd_rules_lint(_args):
    errors = []
    groups = load_yaml(RULES)["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    for a in alerts:
        ann = a.get("annotations", {})
        for k in ("summary", "description"):
            if not str(ann.get(k, "")).strip():
                errors.append(f"alert {a['alert']}: no {k} annotation")
        if a.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            errors.append(f"alert {a['alert']}: severity label missing or unknown")
    for n, where in used_names().items():
        if ":" in n and n not in recorded:
            errors.append(f"{n} (used by {', '.join(sorted(where))}) is not a recording rule")
    tests = load_yaml(RULE_TESTS)
    firing, quiet = set(), set()
    for t in tests["tests"]:
        for c in t.get("alert_rule_test", []):
            (firing if c.get("exp_alerts") else quiet).add(c["alertname"])
    for a in alerts:
        if a["alert"] not in firing:
            errors.append(f"alert {a['alert']}: no promtool test where it fires")
        if a["alert"] not in quiet:
            errors.append(f"alert {a['alert']}: no promtool test where it stays quiet")
    fail(errors, "rules-lint")
    print(f"rules-lint: {len(alerts)} alerts, each with severity, summary, description, "
          f"a firing and a quiet test; {len(recorded)} recording rules")


def prometheusrule_text():
    with open(RULES, encoding="utf-8") as f:
        lines = f.read().splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    body = "\n".join(("  " + l) if l.strip() else "" for l in lines)
    return (
        "# Generated from deploy/prometheus/rules/fragcache.rules.yml: spec is that\n"
        "# file's content. Edit the rules file, then run\n"
        "#   python3 deploy/check/checks.py sync-prometheusrule\n"
        "# deploy/check.sh fails when the two differ.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: fragcache\n"
        "  labels:\n"
        "    app.kubernetes.io/name: fragcache\n"
        "spec:\n" + body + "\n"
    )


def cmd_sync_prometheusrule(args):
    text = prometheusrule_text()
    if args and args[0] == "--check":
        with open(PROMRULE, encoding="utf-8") as f:
            current = f.read()
        errors = []
        if current != text:
            errors.append(f"{PROMRULE} is not generated from {RULES}: "
                          "run python3 deploy/check/checks.py sync-prometheusrule")
        if load_yaml(PROMRULE)["spec"] != load_yaml(RULES):
            errors.append(f"spec of {PROMRULE} differs from {RULES}")
        fail(errors, "sync-prometheusrule")
        print(f"sync-prometheusrule: {PROMRULE} spec equals {RULES}")
        return
    with open(PROMRULE, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote", PROMRULE)


# -------------------------------------------------------------------- dashboard

def cmd_dashboard_lint(args):
    out_rules = args[0]
    errors = []
    with open(DASHBOARD, encoding="utf-8") as f:
        dash = json.load(f)
    for k in ("uid", "title", "panels", "schemaVersion", "templating"):
        if k not in dash:
            errors.append(f"dashboard: no {k}")
    var_names = {v["name"] for v in dash["templating"]["list"]}
    ids = set()
    n_targets = 0

    def walk(panels):
        nonlocal n_targets
        for p in panels:
            pid = p.get("id")
            if pid in ids:
                errors.append(f"panel id {pid} used twice")
            ids.add(pid)
            g = p.get("gridPos", {})
            if not all(k in g for k in "xywh") or g["x"] + g["w"] > 24:
                errors.append(f"panel {p.get('title')}: bad gridPos {g}")
            if p.get("type") != "row":
                if not p.get("targets"):
                    errors.append(f"panel {p.get('title')}: no query")
                if p.get("datasource", {}).get("uid") != "${datasource}":
                    errors.append(f"panel {p.get('title')}: datasource is not the $datasource variable")
            for t in p.get("targets", []):
                n_targets += 1
                for v in re.findall(r"\$\{?(\w+)\}?", t.get("expr", "")):
                    if v not in var_names and not v.startswith("__"):
                        errors.append(f"panel {p.get('title')}: unknown variable ${v}")
            walk(p.get("panels", []))

    walk(dash["panels"])
    rules = [{"record": f"dashboard:query_{i}:check", "expr": substitute_vars(expr)}
             for i, (_title, expr) in enumerate(grafana_exprs(dash))]
    with open(out_rules, "w", encoding="utf-8") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    fail(errors, "dashboard-lint")
    print(f"dashboard-lint: {len(ids)} panels, {n_targets} queries, {len(var_names)} variables")


# ---------------------------------------------------------------------- compose

def merge_compose(base, over):
    """compose's merge of an override file, for the keys this kit uses:
    mappings merge, lists of networks/ports/volumes add up, the rest replaces."""
    out = copy.deepcopy(base)
    for name, svc in over.get("services", {}).items():
        cur = out["services"].setdefault(name, {})
        for k, v in svc.items():
            if isinstance(v, dict) and isinstance(cur.get(k), dict):
                cur[k] = {**cur[k], **v}
            elif k in ("ports", "volumes", "networks") and isinstance(cur.get(k), list):
                cur[k] = cur[k] + [x for x in v if x not in cur[k]]
            else:
                cur[k] = copy.deepcopy(v)
    for k in ("networks", "volumes"):
        if k in over:
            out[k] = {**(out.get(k) or {}), **over[k]}
    return out


INTERP_RE = re.compile(r"\$\{(\w+):\?[^}]*\}")


def compose_l2_errors(c):
    """The L2 override: Redis reachable by fragcache only, secrets from the
    environment, the kit's redis.conf."""
    errors = []
    svcs = c["services"]
    r = svcs.get("redis")
    if not r:
        return ["compose.l2.yaml: no service redis"]
    nets = c.get("networks") or {}
    rnets = r.get("networks", ["default"])
    if r.get("ports"):
        errors.append("redis: publishes ports; only fragcache may reach it")
    for n in rnets:
        if not (nets.get(n) or {}).get("internal"):
            errors.append(f"redis: network {n} is not internal")
    for name, s in svcs.items():
        if name not in ("redis", "fragcache") and set(s.get("networks", ["default"])) & set(rnets):
            errors.append(f"service {name} shares a network with redis; only fragcache may reach it")
    cmd = r.get("command", [])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in r.get("volumes", [])}
    conf = next((a for a in cmd[1:2] if a in mounts), None)
    if not cmd or cmd[0] != "redis-server" or not conf:
        errors.append("redis: command is not redis-server with a mounted redis.conf")
    elif os.path.normpath(os.path.join(os.path.dirname(COMPOSE), mounts[conf])) != REDIS_CONF:
        errors.append(f"redis: mounts {mounts[conf]}, not the kit's {REDIS_CONF}")
    if "--requirepass" not in cmd:
        errors.append("redis: no --requirepass")
    else:
        pw = cmd[cmd.index("--requirepass") + 1] if cmd.index("--requirepass") + 1 < len(cmd) else ""
        m = INTERP_RE.fullmatch(pw)
        if not m:
            errors.append("redis: --requirepass is not a required ${VAR:?...} from the environment")
    for o in cmd:
        if o.startswith("--maxmemory") or o.startswith("--save") or o.startswith("--appendonly"):
            errors.append(f"redis: {o} on the command line overrides redis.conf")
    f = svcs.get("fragcache", {})
    env = f.get("environment", {})
    url = str(env.get("FRAGCACHE_REDIS", ""))
    if not re.fullmatch(r"rediss?://redis:6379(/\d+)?", url):
        errors.append(f"fragcache: FRAGCACHE_REDIS {url!r} is not redis://redis:6379/<db>")
    for k in ("FRAGCACHE_REDIS_PASSWORD", "FRAGCACHE_SCOPE_SECRET"):
        m = INTERP_RE.fullmatch(str(env.get(k, "")))
        if not m:
            errors.append(f"fragcache: {k} is not a required ${{VAR:?...}} from the environment")
    fpw = INTERP_RE.fullmatch(str(env.get("FRAGCACHE_REDIS_PASSWORD", "")))
    rpw = INTERP_RE.fullmatch(cmd[cmd.index("--requirepass") + 1]) if "--requirepass" in cmd else None
    if fpw and rpw and fpw.group(1) != rpw.group(1):
        errors.append("fragcache's FRAGCACHE_REDIS_PASSWORD and redis's --requirepass come from different variables")
    if not set(f.get("networks", ["default"])) >= set(rnets) | {"default"}:
        errors.append("fragcache: not on both the default network and redis's")
    return errors


def cmd_compose_lint(_args):
    errors = []
    base = os.path.dirname(COMPOSE)
    c = merge_compose(load_yaml(COMPOSE), load_yaml(COMPOSE_L2))
    errors += compose_l2_errors(c)
    for name, s in c["services"].items():
        img = s.get("image", "")
        if not img:
            errors.append(f"service {name}: no image")
        elif "build" not in s:
            tag = img.rsplit("/", 1)[-1]
            if ":" not in tag or tag.endswith(":latest"):
                errors.append(f"service {name}: image {img} is not pinned to a tag")
        hc = s.get("healthcheck")
        if not hc:
            errors.append(f"service {name}: no healthcheck")
        for p in s.get("ports", []):
            if not str(p).startswith("127.0.0.1:"):
                errors.append(f"service {name}: port {p} is not bound to loopback")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0]
            if src.startswith((".", "/")) and not os.path.exists(os.path.join(base, src)):
                errors.append(f"service {name}: mounted path {src} does not exist")
        if "build" in s:
            b = s["build"]
            if not os.path.exists(os.path.join(base, b["context"], b["dockerfile"])):
                errors.append(f"service {name}: Dockerfile {b['dockerfile']} not found")
    for f in ("grafana/provisioning/datasources/prometheus.yaml", "grafana/provisioning/dashboards/fragcache.yaml"):
        load_yaml(os.path.join(base, f))
    fail(errors, "compose-lint")
    print(f"compose-lint: {len(c['services'])} services (with {os.path.basename(COMPOSE_L2)}), images pinned, "
          "health checks set, ports on loopback, mounted files exist; Redis internal, secrets from the environment")


# ------------------------------------------------------------ offline kustomize

def kustomize_hash(cm):
    """The name suffix kustomize gives a generated ConfigMap."""
    # Go's json.Marshal of {"data", "kind", "name"}: sorted keys, HTML-escaped.
    # kustomize hashes a generated ConfigMap before naming it: name is "".
    obj = {"kind": "ConfigMap", "name": "", "data": cm.get("data", {})}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    h = list(hashlib.sha256(text.encode()).hexdigest()[:10])
    table = {"0": "g", "1": "h", "3": "k", "a": "m", "e": "t"}
    return "".join(table.get(ch, ch) for ch in h)


KNOWN_KUSTOMIZE = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "images", "namespace",
                   "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def build_kustomization(d, component=False, objs=None, gens=None):
    """Returns (objects, generated) where generated maps ConfigMap name -> generator spec.

    In kustomize's order: resources, then components (which work on what has
    been accumulated so far, as kustomize's components do), then generators,
    then transformers (patches, images, namespace)."""
    path = os.path.join(d, "kustomization.yaml")
    k = load_yaml(path)
    want = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != want:
        raise SystemExit(f"{path}: kind {k.get('kind')}, expected {want}")
    unknown = set(k) - KNOWN_KUSTOMIZE
    if unknown:
        raise SystemExit(f"{path}: the offline renderer does not know {sorted(unknown)}; "
                         "render with kubectl kustomize or extend deploy/check/checks.py")
    objs = [] if objs is None else objs
    gens = {} if gens is None else gens
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            o, g = build_kustomization(p)
            objs += o
            for name in g:
                if name in gens:
                    raise SystemExit(f"{path}: ConfigMap {name} generated twice")
            gens.update(g)
        else:
            objs += load_all(p)
    for c in k.get("components", []):
        objs, gens = build_kustomization(os.path.normpath(os.path.join(d, c)), True, objs, gens)
    for g in k.get("configMapGenerator", []):
        data = {}
        for f in g.get("files", []):
            key, _, src = f.partition("=") if "=" in f else (os.path.basename(f), "", f)
            with open(os.path.join(d, src), encoding="utf-8") as fh:
                data[key] = fh.read()
        for lit in g.get("literals", []):
            key, _, val = lit.partition("=")
            data[key] = val
        behavior = g.get("behavior", "create")
        if behavior == "create":
            if g["name"] in gens:
                raise SystemExit(f"{path}: ConfigMap {g['name']} generated twice")
            gens[g["name"]] = data
        elif behavior == "replace":
            if g["name"] not in gens:
                raise SystemExit(f"{path}: replace of unknown ConfigMap {g['name']}")
            gens[g["name"]] = data
        elif behavior == "merge":
            gens[g["name"]] = {**gens[g["name"]], **data}
        else:
            raise SystemExit(f"{path}: unknown behavior {behavior}")
    for pt in k.get("patches", []):
        apply_patch(d, path, pt, objs)
    for img in k.get("images", []):
        for o in objs:
            for c in pod_containers(o):
                name = re.split(r"[:@]", c["image"], maxsplit=1)[0]
                if name == img["name"]:
                    tag = c["image"][len(name):]
                    new = img.get("newName", name)
                    if "newTag" in img:
                        tag = ":" + str(img["newTag"])
                    if "digest" in img:
                        tag = "@" + img["digest"]
                    c["image"] = new + tag
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
        gens = {n: dict(v, __namespace__=k["namespace"]) for n, v in gens.items()}
    return objs, gens


def apply_patch(d, path, pt, objs):
    """A `patches:` entry whose file is a JSON patch (RFC 6902, as a YAML
    list) and whose target names the objects; strategic-merge patches are
    left to kubectl kustomize."""
    if "path" not in pt or "target" not in pt or "patch" in pt:
        raise SystemExit(f"{path}: the offline renderer applies only `path:` patches with a `target:`")
    ops = load_yaml(os.path.join(d, pt["path"]))
    if not isinstance(ops, list):
        raise SystemExit(f"{path}: {pt['path']} is not a JSON patch (a list of operations); "
                         "the offline renderer does not apply strategic-merge patches")
    t = pt["target"]
    unknown = set(t) - {"group", "version", "kind", "name", "namespace"}
    if unknown:
        raise SystemExit(f"{path}: patch target keys {sorted(unknown)} not known to the offline renderer")
    hits = 0
    for o in objs:
        group, _, version = o["apiVersion"].rpartition("/")
        meta = o.get("metadata", {})
        if (t.get("kind", o["kind"]) == o["kind"] and t.get("name", meta.get("name")) == meta.get("name")
                and t.get("group", group) == group and t.get("version", version) == version
                and t.get("namespace", meta.get("namespace")) == meta.get("namespace")):
            for op in ops:
                try:
                    json_patch_op(o, op)
                except (KeyError, IndexError, ValueError, TypeError) as e:
                    raise SystemExit(f"{path}: {pt['path']}: {op.get('op')} {op.get('path')}: {e}")
            hits += 1
    if not hits:
        raise SystemExit(f"{path}: patch {pt['path']} matches no object")


def json_patch_op(doc, op):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    if not parts:
        raise ValueError("patching the whole document is not supported")
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        if kind == "add":
            if last == "-":
                parent.append(copy.deepcopy(op["value"]))
            else:
                i = int(last)
                if i > len(parent):
                    raise IndexError(f"index {i} past the end")
                parent.insert(i, copy.deepcopy(op["value"]))
            return
        i = int(last)
        if kind == "remove":
            del parent[i]
        elif kind == "replace":
            parent[i] = copy.deepcopy(op["value"])
        elif kind == "test":
            if parent[i] != op["value"]:
                raise ValueError(f"test failed: {parent[i]!r} is not {op['value']!r}")
        else:
            raise ValueError(f"operation {kind} not supported")
        return
    if kind == "add":
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    elif kind == "replace":
        if last not in parent:
            raise KeyError(f"{last} does not exist")
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "test":
        if parent[last] != op["value"]:
            raise ValueError(f"test failed: {parent[last]!r} is not {op['value']!r}")
    else:
        raise ValueError(f"operation {kind} not supported")


def pod_spec(o):
    if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return o["spec"]["template"]["spec"]
    return None


def pod_containers(o):
    s = pod_spec(o)
    if not s:
        return []
    return s.get("containers", []) + s.get("initContainers", [])


def render(d):
    objs, gens = build_kustomization(d)
    names = {}
    cms = []
    for name, data in gens.items():
        data = dict(data)
        ns = data.pop("__namespace__", None)
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        if ns:
            cm["metadata"]["namespace"] = ns
        full = f"{name}-{kustomize_hash(cm)}"
        cm["metadata"]["name"] = full
        names[name] = full
        cms.append(cm)
    for o in objs:
        s = pod_spec(o)
        if not s:
            continue
        for v in s.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] in names:
                v["configMap"]["name"] = names[v["configMap"]["name"]]
        for c in pod_containers(o):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("configMapKeyRef")
                if ref and ref["name"] in names:
                    ref["name"] = names[ref["name"]]
            for e in c.get("envFrom", []):
                ref = e.get("configMapRef")
                if ref and ref["name"] in names:
                    ref["name"] = names[ref["name"]]
    return cms + objs


def cmd_render(args):
    docs = render(args[0])
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=True))


def obj_key(o):
    return (o.get("kind"), o.get("metadata", {}).get("namespace", ""), o.get("metadata", {}).get("name"))


def cmd_k8s_compare(args):
    a = {obj_key(o): o for o in load_all(args[0])}
    b = {obj_key(o): o for o in load_all(args[1])}
    errors = []
    for k in sorted(set(a) | set(b), key=str):
        if k not in a or k not in b:
            errors.append(f"{k} only in {'the first' if k in a else 'the second'} render")
        elif a[k] != b[k]:
            errors.append(f"{k} differs between the renders")
    fail(errors, "k8s-compare")
    print(f"k8s-compare: {len(a)} objects identical in both renders")


def parse_duration(s):
    total = 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", str(s))
    if not parts or "".join(a + b for a, b in parts) != str(s):
        raise ValueError(f"not a Go duration: {s!r}")
    for num, unit in parts:
        total += float(num) * units[unit]
    return total


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def cmd_k8s_lint(args):
    docs = load_all(args[0])
    errors = []
    by_kind = {}
    for o in docs:
        for k in ("apiVersion", "kind"):
            if not o.get(k):
                errors.append(f"object without {k}: {str(o)[:80]}")
        if not o.get("metadata", {}).get("name"):
            errors.append(f"{o.get('kind')} without metadata.name")
        by_kind.setdefault(o.get("kind"), []).append(o)
    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    deps = by_kind.get("Deployment", [])
    if len(deps) != 1:
        errors.append(f"expected one Deployment, found {len(deps)}")
        fail(errors, "k8s-lint")
    dep = deps[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})
    if not labels_match(spec["selector"]["matchLabels"], pod_labels):
        errors.append("Deployment selector does not match its pod labels")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        errors.append("pod securityContext.runAsNonRoot is not true")
    if psc.get("runAsUser") != 65532:
        errors.append("pod does not run as uid 65532 (distroless nonroot)")
    ports = {}
    cfg = {}
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True:
            errors.append(f"container {c['name']}: root filesystem not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"container {c['name']}: allowPrivilegeEscalation not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            errors.append(f"container {c['name']}: capabilities not dropped (ALL)")
        img = c.get("image", "")
        if ":" not in img.rsplit("/", 1)[-1] and "@" not in img or img.endswith(":latest"):
            errors.append(f"container {c['name']}: image {img} not pinned")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
            errors.append(f"container {c['name']}: cpu/memory requests missing")
        if not res.get("limits", {}).get("memory"):
            errors.append(f"container {c['name']}: memory limit missing")
        for p in c.get("ports", []):
            ports[p["name"]] = p["containerPort"]
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            g = c.get(probe, {}).get("httpGet", {})
            if g.get("path") != path:
                errors.append(f"container {c['name']}: {probe} is not GET {path}")
            if g.get("port") not in ports and g.get("port") not in ports.values():
                errors.append(f"container {c['name']}: {probe} port {g.get('port')} is not a container port")
            elif ports.get(g.get("port"), g.get("port")) != 9188:
                errors.append(f"container {c['name']}: {probe} does not probe the admin port 9188")
        env = {e["name"]: e for e in c.get("env", [])}
        cfg_path = env.get("FRAGCACHE_CONFIG", {}).get("value")
        for v in pod.get("volumes", []):
            if "configMap" in v:
                if v["configMap"]["name"] not in cms:
                    errors.append(f"volume {v['name']}: ConfigMap {v['configMap']['name']} not in the render")
                    continue
                mount = next((m for m in c.get("volumeMounts", []) if m["name"] == v["name"]), None)
                for key, text in cms[v["configMap"]["name"]].get("data", {}).items():
                    if mount and cfg_path == os.path.join(mount["mountPath"], key):
                        cfg = yaml.safe_load(text) or {}
        if cfg_path and not cfg:
            errors.append(f"FRAGCACHE_CONFIG={cfg_path} is not a file of a mounted ConfigMap")
    if cfg:
        errors += config_key_errors(cfg, "ConfigMap config")
        try:
            need = parse_duration(cfg.get("drain_delay", "5s")) + parse_duration(cfg.get("shutdown_timeout", "15s"))
            if pod.get("terminationGracePeriodSeconds", 30) <= need:
                errors.append(f"terminationGracePeriodSeconds {pod.get('terminationGracePeriodSeconds', 30)} "
                              f"does not exceed drain_delay + shutdown_timeout ({need:g}s)")
        except ValueError as e:
            errors.append(str(e))
    if pod.get("automountServiceAccountToken") is not False:
        errors.append("pod mounts a service account token it does not need")
    if pod.get("enableServiceLinks") is not False:
        errors.append("pod has service links: Kubernetes would set FRAGCACHE_PORT, FRAGCACHE_SERVICE_HOST, ... "
                      "(one set per Service), each warned about as an unknown setting")
    for c in pod["containers"]:
        for e in c.get("env", []):
            n = e["name"]
            if n.startswith("FRAGCACHE_") and n not in known_env():
                errors.append(f"container {c['name']}: env {n} is no fragcache setting")
    # The Services of fragcache's pods; any other (the L2's) is checked by l2_lint.
    svcs = [s for s in by_kind.get("Service", [])
            if labels_match(s["spec"].get("selector"), pod_labels)]
    for s in by_kind.get("Service", []):
        if s not in svcs and not by_kind.get("StatefulSet"):
            errors.append(f"Service {s['metadata']['name']} does not select the pods")
    for s in svcs:
        names = {p.get("name") for p in s["spec"]["ports"]}
        if not {"http", "metrics"} <= names:
            errors.append(f"Service {s['metadata']['name']}: ports named http and metrics expected, got {names}")
        for p in s["spec"]["ports"]:
            if p.get("targetPort") not in ports and p.get("targetPort") not in ports.values():
                errors.append(f"Service port {p.get('name')}: targetPort {p.get('targetPort')} not a container port")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if not labels_match(pdb["spec"]["selector"]["matchLabels"], pod_labels):
            errors.append("PodDisruptionBudget does not select the pods")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] != dep["metadata"]["name"]:
            errors.append("HPA does not scale the Deployment")
        if h["spec"].get("minReplicas", 1) < 2:
            errors.append("HPA minReplicas below 2: the PDB would block every drain")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        matched = [s for s in svcs if labels_match(sel, s["metadata"].get("labels", {}))]
        if not matched:
            errors.append("ServiceMonitor selects no Service")
        for ep in sm["spec"]["endpoints"]:
            for s in matched:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    errors.append(f"ServiceMonitor port {ep.get('port')} not a port of Service {s['metadata']['name']}")
        jl = sm["spec"].get("jobLabel")
        for s in matched:
            job = s["metadata"].get("labels", {}).get(jl) if jl else s["metadata"]["name"]
            if job != "fragcache":
                errors.append(f"ServiceMonitor gives job={job!r}; the alerts expect job=\"fragcache\"")
    for pr in by_kind.get("PrometheusRule", []):
        if pr["spec"] != load_yaml(RULES):
            errors.append(f"PrometheusRule {pr['metadata']['name']} differs from {RULES}")
    if by_kind.get("StatefulSet") or by_kind.get("NetworkPolicy"):
        errors += l2_lint(by_kind, dep, svcs, cms)
    elif any(e["name"] == "FRAGCACHE_REDIS" for c in pod["containers"] for e in c.get("env", [])):
        errors.append("the Deployment sets FRAGCACHE_REDIS but the render has no Redis")
    fail(errors, "k8s-lint")
    kinds = ", ".join(f"{k}" for k in sorted(by_kind))
    print(f"k8s-lint: {len(docs)} objects ({kinds}) consistent")


def known_env():
    return {"FRAGCACHE_" + x.upper() for x in SETTINGS + ENV_ONLY} | set(SECRET_ENV)


def k8s_bytes(q):
    """A Kubernetes memory quantity in bytes."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"not a memory quantity: {q!r}")
    mult = {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[m.group(2)]
    return float(m.group(1)) * mult


def redis_bytes(v):
    """A redis.conf memory value in bytes (1k = 1000, 1kb = 1024, ...)."""
    m = re.fullmatch(r"(\d+)(k|kb|m|mb|g|gb)?", str(v).lower())
    if not m:
        raise ValueError(f"not a redis memory value: {v!r}")
    mult = {None: 1, "k": 1e3, "kb": 2**10, "m": 1e6, "mb": 2**20, "g": 1e9, "gb": 2**30}[m.group(2)]
    return int(m.group(1)) * mult


def parse_redis_conf(text):
    """redis.conf directives: name -> list of argument lists (quotes removed)."""
    import shlex
    conf = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        conf.setdefault(words[0].lower(), []).append(words[1:])
    return conf


# The L2 may use at most this share of Redis's container memory limit for
# maxmemory: the rest is client and pub/sub buffers, Lua and fragmentation.
REDIS_MAXMEMORY_SHARE = 0.8


def env_secret(container, name):
    """(Secret, key, optional) of an env var taken from a Secret, or None."""
    for e in container.get("env", []):
        if e["name"] == name:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            return (ref["name"], ref["key"], ref.get("optional", False)) if ref else None
    return None


def l2_lint(by_kind, dep, fc_svcs, cms):
    """The Redis of the shared L2 and its wiring (DESIGN rules 25 and 27)."""
    errors = []
    fc_pod = dep["spec"]["template"]
    fc_labels = fc_pod["metadata"].get("labels", {})
    sts_list = by_kind.get("StatefulSet", [])
    if len(sts_list) != 1:
        return [f"expected one Redis StatefulSet, found {len(sts_list)}"]
    sts = sts_list[0]
    name = sts["metadata"]["name"]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if spec.get("replicas") != 1:
        errors.append(f"StatefulSet {name}: replicas {spec.get('replicas')}, the L2 is one Redis")
    if not labels_match(spec["selector"]["matchLabels"], labels):
        errors.append(f"StatefulSet {name}: selector does not match its pod labels")
    if labels_match(dep["spec"]["selector"]["matchLabels"], labels):
        errors.append("the fragcache Deployment's selector also selects the Redis pods")
    for s in fc_svcs:
        if labels_match(s["spec"].get("selector"), labels):
            errors.append(f"Service {s['metadata']['name']} selects both fragcache and Redis pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if labels_match(pdb["spec"]["selector"]["matchLabels"], labels):
            errors.append(f"PodDisruptionBudget {pdb['metadata']['name']} selects the Redis pods")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
        errors.append(f"StatefulSet {name}: pod does not run as a non-root uid")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append(f"StatefulSet {name}: seccomp profile is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        errors.append(f"StatefulSet {name}: pod mounts a service account token it does not need")
    if len(pod["containers"]) != 1:
        errors.append(f"StatefulSet {name}: expected one container")
        return errors
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append("redis: root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append("redis: allowPrivilegeEscalation not false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        errors.append("redis: capabilities not dropped (ALL)")
    img = c.get("image", "")
    tag = img.rsplit("/", 1)[-1]
    if (":" not in tag and "@" not in img) or tag.endswith(":latest"):
        errors.append(f"redis: image {img} not pinned")
    res = c.get("resources", {})
    if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory"):
        errors.append("redis: cpu/memory requests missing")
    limit = res.get("limits", {}).get("memory")
    if not limit:
        errors.append("redis: memory limit missing")
    for probe in ("livenessProbe", "readinessProbe"):
        if not c.get(probe):
            errors.append(f"redis: no {probe}")
        elif "exec" not in c[probe]:
            errors.append(f"redis: {probe} is not an exec probe (the NetworkPolicy admits fragcache only)")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("redis") != 6379:
        errors.append("redis: no container port redis = 6379")
    # redis.conf: the first argument, a file of a mounted ConfigMap.
    args = c.get("command", [])[1:] + c.get("args", [])
    conf_text = None
    if args and not args[0].startswith("-"):
        for m in c.get("volumeMounts", []):
            v = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), {})
            cm = cms.get(v.get("configMap", {}).get("name"))
            if cm:
                for key, text in cm.get("data", {}).items():
                    if args[0] == os.path.join(m["mountPath"], key):
                        conf_text = text
    if conf_text is None:
        errors.append("redis: its first argument is not a redis.conf of a mounted ConfigMap")
        return errors
    conf = parse_redis_conf(conf_text)
    # Command-line options override the file, as redis-server reads them.
    i = 1
    while i < len(args):
        if args[i].startswith("--"):
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                j += 1
            conf[args[i][2:].lower()] = [args[i + 1:j]]
            i = j
        else:
            i += 1
    last = {k: v[-1] for k, v in conf.items()}
    if last.get("maxmemory-policy") != ["volatile-lru"]:
        errors.append(f"redis: maxmemory-policy {last.get('maxmemory-policy')}, DESIGN rule 27 wants volatile-lru "
                      "(the purge records and the run marker have no TTL and must not be evicted)")
    try:
        mm = redis_bytes(last.get("maxmemory", ["0"])[0])
        if mm == 0:
            errors.append("redis: no maxmemory: Redis would grow until the container is killed")
        elif limit and mm > REDIS_MAXMEMORY_SHARE * k8s_bytes(limit):
            errors.append(f"redis: maxmemory {mm / 2**20:.0f}MiB is more than {REDIS_MAXMEMORY_SHARE:.0%} "
                          f"of the memory limit {limit}")
    except ValueError as e:
        errors.append(f"redis: {e}")
    if not spec.get("volumeClaimTemplates"):
        if last.get("save") != [""] or last.get("appendonly", ["no"]) != ["no"]:
            errors.append("redis: persistence on (save / appendonly) without a volume")
    rp = conf.get("requirepass")
    if "requirepass" in parse_redis_conf(conf_text):
        errors.append("redis: requirepass written in redis.conf (a ConfigMap); it must come from a Secret")
    m = re.fullmatch(r"\$\((\w+)\)", rp[-1][0]) if rp and rp[-1] else None
    redis_secret = env_secret(c, m.group(1)) if m else None
    if not redis_secret:
        errors.append("redis: --requirepass is not $(VAR) of an env var from a Secret")
    elif redis_secret[2]:
        errors.append("redis: the requirepass Secret is optional")
    # The Service and who may reach it.
    for s in by_kind.get("Service", []):
        if s not in fc_svcs and not labels_match(s["spec"].get("selector"), labels):
            errors.append(f"Service {s['metadata']['name']} selects neither fragcache's nor Redis's pods")
    svcs = [s for s in by_kind.get("Service", []) if labels_match(s["spec"].get("selector"), labels)]
    if len(svcs) != 1:
        errors.append(f"expected one Service of the Redis pods, found {len(svcs)}")
        return errors
    svc = svcs[0]
    if spec.get("serviceName") != svc["metadata"]["name"]:
        errors.append(f"StatefulSet {name}: serviceName {spec.get('serviceName')} is not its Service")
    svc_port = None
    for p in svc["spec"]["ports"]:
        if ports.get(p.get("targetPort"), p.get("targetPort")) == 6379:
            svc_port = p["port"]
    if svc_port is None:
        errors.append(f"Service {svc['metadata']['name']}: no port to the Redis container port 6379")
    nps = [n for n in by_kind.get("NetworkPolicy", [])
           if labels_match(n["spec"]["podSelector"].get("matchLabels"), labels)]
    if not nps:
        errors.append("no NetworkPolicy selects the Redis pods (DESIGN rule 25)")
    for n in nps:
        where = f"NetworkPolicy {n['metadata']['name']}"
        if "Ingress" not in n["spec"].get("policyTypes", ["Ingress"]):
            errors.append(f"{where}: policyTypes lacks Ingress")
        dep_sel = dep["spec"]["selector"]["matchLabels"]
        for rule in n["spec"].get("ingress", []):
            if not rule.get("from"):
                errors.append(f"{where}: an ingress rule without `from` admits every pod")
            for peer in rule.get("from", []):
                sel = (peer.get("podSelector") or {}).get("matchLabels")
                if set(peer) != {"podSelector"} or not sel:
                    errors.append(f"{where}: peer {peer} is not a podSelector of this namespace")
                elif not labels_match(sel, fc_labels) or not labels_match(dep_sel, sel):
                    errors.append(f"{where}: peer {sel} is not (only) the fragcache pods")
            got = [(p.get("protocol", "TCP"), ports.get(p.get("port"), p.get("port"))) for p in rule.get("ports", [])]
            if got != [("TCP", 6379)]:
                errors.append(f"{where}: ingress ports {got}, expected TCP 6379 only")
    # fragcache's side: --redis at the Service, the password from the same
    # Secret, the scope secret shared and required.
    fc = next(c for c in fc_pod["spec"]["containers"] if c["name"] == "fragcache")
    env = {e["name"]: e for e in fc.get("env", [])}
    url = env.get("FRAGCACHE_REDIS", {}).get("value", "")
    m = re.fullmatch(r"rediss?://(?:([^:@/]*)(?::([^@/]*))?@)?([^:/]+):(\d+)(?:/(\d+))?", url)
    if not m:
        errors.append(f"fragcache: FRAGCACHE_REDIS {url!r} is not a redis://host:port/db URL")
    else:
        if m.group(2):
            errors.append("fragcache: FRAGCACHE_REDIS holds a password; use FRAGCACHE_REDIS_PASSWORD from the Secret")
        host = m.group(3).split(".")[0]
        if host != svc["metadata"]["name"] or int(m.group(4)) != svc_port:
            errors.append(f"fragcache: FRAGCACHE_REDIS points at {m.group(3)}:{m.group(4)}, the Service is "
                          f"{svc['metadata']['name']}:{svc_port}")
    fc_secret = env_secret(fc, "FRAGCACHE_REDIS_PASSWORD")
    if not fc_secret or not redis_secret or fc_secret[:2] != redis_secret[:2]:
        errors.append(f"fragcache: FRAGCACHE_REDIS_PASSWORD {fc_secret} is not Redis's requirepass Secret {redis_secret}")
    elif fc_secret[2]:
        errors.append("fragcache: the Redis password Secret is optional")
    scope = env_secret(fc, "FRAGCACHE_SCOPE_SECRET")
    if not scope:
        errors.append("fragcache: FRAGCACHE_SCOPE_SECRET does not come from a Secret: replicas would not share "
                      "user-scoped entries")
    elif scope[2]:
        errors.append("fragcache: the scope secret is optional: a pod without it keeps user-scoped entries to itself")
    return errors


# -------------------------------------------------------------- config and env

def config_key_errors(cfg, where):
    errors = []
    allowed = set(SETTINGS) | set(YAML_ONLY)
    for k in cfg:
        if k not in allowed:
            errors.append(f"{where}: unknown setting {k!r}")
    for k in ("wait", "fragment_ttl", "stale_ttl", "fetch_timeout", "max_wait", "upstream_timeout",
              "shutdown_timeout", "drain_delay"):
        if k in cfg:
            try:
                parse_duration(cfg[k])
            except ValueError as e:
                errors.append(f"{where}: {k}: {e}")
    for i, f in enumerate(cfg.get("fragments") or []):
        extra = set(f) - {"name", "match", "share", "ttl"}
        if extra or "match" not in f:
            errors.append(f"{where}: fragments[{i}]: needs match, knows name/match/share/ttl, got {sorted(f)}")
    return errors


def cmd_config_keys(args):
    errors = []
    for path in args:
        if path.endswith((".yaml", ".yml")):
            errors += config_key_errors(load_yaml(path) or {}, path)
            continue
        allowed = known_env()
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key = line.split("=", 1)[0]
                if key.startswith("FRAGCACHE_") and key not in allowed:
                    errors.append(f"{path}:{n}: unknown setting {key}")
                elif not key.startswith(("FRAGCACHE_", "GO")):
                    errors.append(f"{path}:{n}: {key} is not a fragcache or Go runtime variable")
    fail(errors, "config-keys")
    print(f"config-keys: {len(args)} file(s) use known settings only")


# --------------------------------------------------------------------- metrics

def cmd_used_names(_args):
    for n, where in sorted(used_names().items()):
        print(n, "\t", ", ".join(sorted(where)))


def parse_scrape(path):
    families = {}  # name -> type
    samples = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(None, 3)
                families[name] = typ.strip()
            elif line.startswith("# HELP "):
                families.setdefault(line.split(None, 3)[2], "untyped")
            elif line.strip() and not line.startswith("#"):
                samples.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return families, samples


def cmd_scrape_check(args):
    scrape, version = args[0], args[1]
    families, samples = parse_scrape(scrape)
    groups = load_yaml(RULES)["groups"]
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    errors, warnings = [], []
    absent_l2 = set()
    checked = 0
    for n, where in sorted(used_names().items()):
        if n in SYNTHETIC or n in recorded:
            continue
        checked += 1
        base, suffix = n, ""
        for s in SUFFIXES:
            if n.endswith(s) and n[: -len(s)] in (set(families) | set(METRICS) | set(L2_METRICS)):
                base, suffix = n[: -len(s)], s
        places = ", ".join(sorted(where))
        if base in families:
            typ = families[base]
            if suffix == "_bucket" and typ != "histogram":
                errors.append(f"{n} ({places}): {base} is a {typ}, not a histogram")
            if suffix in ("_sum", "_count") and typ not in ("histogram", "summary"):
                errors.append(f"{n} ({places}): {base} is a {typ}, has no {suffix}")
            want = {**METRICS, **L2_METRICS}.get(base)
            if want and want != typ:
                errors.append(f"{base}: scraped as {typ}, expected {want}")
        elif n in samples:
            pass
        elif base in L2_METRICS:
            absent_l2.add(base)
            checked -= 1
        elif base in MAY_BE_ABSENT:
            warnings.append(f"{base} ({places}) not in the scrape yet: no child of this labelled family "
                            "exists (the demo traffic produced no such event)")
        elif base in METRICS:
            errors.append(f"{n} ({places}) is missing from the scrape")
        else:
            errors.append(f"{n} ({places}) is neither in the scrape nor a known fragcache metric")
    for m, typ in METRICS.items():
        if m not in families and m not in MAY_BE_ABSENT:
            errors.append(f"{m} ({typ}) of the design is missing from the scrape")
    info = [l for l in open(scrape, encoding="utf-8") if l.startswith("fragcache_build_info{")]
    if not any(f'version="{version}"' in l for l in info):
        errors.append(f'fragcache_build_info has no version="{version}" (the Dockerfile sets '
                      f"-X main.version): {info}")
    if absent_l2:
        print(f"  note: {len(absent_l2)} L2 families not exported without --redis "
              f"({', '.join(sorted(absent_l2))}); the l2 step checks them against a process with --redis")
    for w in warnings:
        print("  warning: " + w)
    fail(errors, "scrape-check")
    print(f"scrape-check: {checked} metric names used by the dashboard and rules found in the scrape "
          f"({len(warnings)} labelled families not yet populated), build_info version={version}")


SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")


def cmd_metric_sum(args):
    """Sum of the samples of NAME in SCRAPE whose labels match every
    LABEL=VALUE or LABEL=~REGEX; 0 when none does."""
    path, name, conds = args[0], args[1], args[2:]
    total = 0.0
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = SAMPLE_RE.match(line)
            if not m or m.group(1) != name:
                continue
            labels = {k: v for k, _op, v in MATCHER_RE.findall(m.group(2) or "")}
            ok = True
            for c in conds:
                if "=~" in c:
                    k, rx = c.split("=~", 1)
                    ok = ok and re.fullmatch(rx, labels.get(k, "")) is not None
                else:
                    k, v = c.split("=", 1)
                    ok = ok and labels.get(k, "") == v
            if ok:
                total += float(m.group(3))
    print(f"{total:g}")


def cmd_l2_scrape(args):
    """Every L2 family of the design is in SCRAPE, with its type."""
    families, _ = parse_scrape(args[0])
    errors = []
    for name, typ in L2_METRICS.items():
        if name not in families:
            errors.append(f"{name} ({typ}) is missing from the scrape of a process with --redis")
        elif families[name] != typ:
            errors.append(f"{name}: scraped as {families[name]}, expected {typ}")
    fail(errors, "l2-scrape")
    print(f"l2-scrape: the {len(L2_METRICS)} L2 families are in the scrape with their types")


def cmd_free_ports(args):
    socks = []
    for _ in range(int(args[0])):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


COMMANDS = {
    "rules-lint": cmd_rules_lint,
    "sync-prometheusrule": cmd_sync_prometheusrule,
    "dashboard-lint": cmd_dashboard_lint,
    "compose-lint": cmd_compose_lint,
    "render": cmd_render,
    "k8s-lint": cmd_k8s_lint,
    "k8s-compare": cmd_k8s_compare,
    "used-names": cmd_used_names,
    "names-lint": cmd_names_lint,
    "scrape-check": cmd_scrape_check,
    "config-keys": cmd_config_keys,
    "free-ports": cmd_free_ports,
    "metric-sum": cmd_metric_sum,
    "l2-scrape": cmd_l2_scrape,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])
