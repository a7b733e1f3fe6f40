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
  render DIR                  offline kustomize: render DIR's kustomization to stdout
  k8s-lint RENDERED           semantic checks of a rendered manifest stream
  k8s-compare A B             two renders hold the same objects (generated-name hashes included)
  used-names                  metric names used by the dashboard and the rules
  scrape-check SCRAPE VERSION every used name exists in the scrape (see METRICS below)
  config-keys FILE...         YAML config / env files use only known settings
  free-ports N                N free loopback TCP ports
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

# Settings of the "Command line" section of the design (snake_case YAML keys;
# FRAGCACHE_<UPPER> variables). --demo and --version are flags only; --config
# has no YAML key.
SETTINGS = """listen upstream admin_listen wait fragment_ttl stale_ttl fetch_timeout cache_size
allow_host esi_cookie max_depth max_includes esi_trigger max_wait upstream_timeout max_page_size
max_fragment_size max_header_bytes fetch_concurrency fetch_per_host refresh_queue scope_secret
public_host shutdown_timeout drain_delay access_log pprof log_format""".split()
YAML_ONLY = ["fragments"]
ENV_ONLY = ["config"]

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

def cmd_compose_lint(_args):
    errors = []
    base = os.path.dirname(COMPOSE)
    c = load_yaml(COMPOSE)
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
    print(f"compose-lint: {len(c['services'])} services, images pinned, health checks set, "
          "ports on loopback, mounted files exist")


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


KNOWN_KUSTOMIZE = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "images", "namespace"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def build_kustomization(d, component=False):
    """Returns (objects, generated) where generated maps ConfigMap name -> generator spec."""
    path = os.path.join(d, "kustomization.yaml")
    k = load_yaml(path)
    want = "Component" if component else "Kustomization"
    if k.get("kind", "Kustomization") != want:
        raise SystemExit(f"{path}: kind {k.get('kind')}, expected {want}")
    unknown = set(k) - KNOWN_KUSTOMIZE
    if unknown:
        raise SystemExit(f"{path}: the offline renderer does not know {sorted(unknown)}; "
                         "render with kubectl kustomize or extend deploy/check/checks.py")
    objs, gens = [], {}
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            o, g = build_kustomization(p)
            objs += o
            gens.update(g)
        else:
            objs += load_all(p)
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
    for c in k.get("components", []):
        o, g = build_kustomization(os.path.normpath(os.path.join(d, c)), component=True)
        objs += o
        gens.update(g)
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
    svcs = by_kind.get("Service", [])
    for s in svcs:
        if not labels_match(s["spec"].get("selector"), pod_labels):
            errors.append(f"Service {s['metadata']['name']} does not select the pods")
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
    fail(errors, "k8s-lint")
    kinds = ", ".join(f"{k}" for k in sorted(by_kind))
    print(f"k8s-lint: {len(docs)} objects ({kinds}) consistent")


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
        allowed = {"FRAGCACHE_" + s.upper() for s in SETTINGS + ENV_ONLY}
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
    checked = 0
    for n, where in sorted(used_names().items()):
        if n in SYNTHETIC or n in recorded:
            continue
        checked += 1
        base, suffix = n, ""
        for s in SUFFIXES:
            if n.endswith(s) and n[: -len(s)] in (set(families) | set(METRICS)):
                base, suffix = n[: -len(s)], s
        places = ", ".join(sorted(where))
        if base in families:
            typ = families[base]
            if suffix == "_bucket" and typ != "histogram":
                errors.append(f"{n} ({places}): {base} is a {typ}, not a histogram")
            if suffix in ("_sum", "_count") and typ not in ("histogram", "summary"):
                errors.append(f"{n} ({places}): {base} is a {typ}, has no {suffix}")
            if base in METRICS and METRICS[base] != typ:
                errors.append(f"{base}: scraped as {typ}, expected {METRICS[base]}")
        elif n in samples:
            pass
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
    for w in warnings:
        print("  warning: " + w)
    fail(errors, "scrape-check")
    print(f"scrape-check: {checked} metric names used by the dashboard and rules found in the scrape "
          f"({len(warnings)} labelled families not yet populated), build_info version={version}")


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
    "scrape-check": cmd_scrape_check,
    "config-keys": cmd_config_keys,
    "free-ports": cmd_free_ports,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](sys.argv[2:])
