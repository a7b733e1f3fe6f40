#!/usr/bin/env python3
"""Generates fragcache.json, the Grafana dashboard of fragcache.

Edit this file, then run `python3 deploy/grafana/dashboard.py` and commit both;
deploy/check.sh fails when fragcache.json is not what this script writes.
Only the standard library is used.
"""
import json
import os
import sys

SEL = 'job=~"$job", instance=~"$instance"'
FRAG = SEL + ', fragment=~"$fragment"'
RI = "$__rate_interval"

_ids = iter(range(1, 1000))
_layout = {"x": 0, "y": 0, "h": 0}


def _place(w, h):
    if _layout["x"] + w > 24:
        _layout["x"] = 0
        _layout["y"] += _layout["h"]
        _layout["h"] = 0
    pos = {"x": _layout["x"], "y": _layout["y"], "w": w, "h": h}
    _layout["x"] += w
    _layout["h"] = max(_layout["h"], h)
    return pos


DS = {"type": "prometheus", "uid": "${datasource}"}


def target(expr, legend, ref):
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def row(title):
    _layout["x"] = 0
    _layout["y"] += _layout["h"]
    _layout["h"] = 0
    pos = _place(24, 1)
    _layout["x"] = 24  # force a new line for the panels below
    return {"type": "row", "id": next(_ids), "title": title, "collapsed": False, "gridPos": pos, "panels": []}


def _targets(queries):
    return [target(e, l, chr(ord("A") + i)) for i, (e, l) in enumerate(queries)]


def timeseries(title, description, queries, unit="short", w=8, h=8, stack=False, min0=True):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    defaults = {"unit": unit, "custom": custom}
    if min0:
        defaults["min"] = 0
    return {
        "type": "timeseries", "id": next(_ids), "title": title, "description": description,
        "datasource": DS, "gridPos": _place(w, h), "targets": _targets(queries),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title, description, queries, unit="short", w=4, h=4, thresholds=None, text_mode="auto"):
    steps = thresholds or [{"color": "green", "value": None}]
    return {
        "type": "stat", "id": next(_ids), "title": title, "description": description,
        "datasource": DS, "gridPos": _place(w, h), "targets": _targets(queries),
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": text_mode,
                    "justifyMode": "auto", "orientation": "auto"},
    }


def state_timeline(title, description, queries, mappings, w=24, h=8):
    return {
        "type": "state-timeline", "id": next(_ids), "title": title, "description": description,
        "datasource": DS, "gridPos": _place(w, h), "targets": _targets(queries),
        "fieldConfig": {"defaults": {"mappings": mappings, "custom": {"fillOpacity": 80, "lineWidth": 0},
                                     "thresholds": {"mode": "absolute",
                                                    "steps": [{"color": "green", "value": None}]}},
                        "overrides": []},
        "options": {"showValue": "never", "mergeValues": True, "rowHeight": 0.9,
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
    }


def quantiles(metric, by, sel, qs=(0.5, 0.9, 0.99), legend_prefix=""):
    by_l = ", ".join(by + ["le"])
    out = []
    for q in qs:
        legend = legend_prefix + "p%g" % (q * 100)
        out.append((f"histogram_quantile({q}, sum by ({by_l}) (rate({metric}_bucket{{{sel}}}[{RI}])))", legend))
    return out


def var_query(name, label, query, multi=True):
    return {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query, "refresh": 2, "sort": 1,
        "multi": multi, "includeAll": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [], "hide": 0,
    }


def build():
    p = []
    p.append(row("Overview"))
    p.append(stat("Instances up", "Scraped fragcache instances that answer.",
                  [(f"sum(up{{{SEL}}})", "up")],
                  thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]))
    p.append(stat("Version", "Versions running (fragcache_build_info).",
                  [(f"count by (version) (fragcache_build_info{{{SEL}}})", "{{version}}")], text_mode="name"))
    p.append(stat("Requests/s", "All responses fragcache sent.",
                  [(f"sum(rate(fragcache_http_requests_total{{{SEL}}}[{RI}]))", "req/s")], unit="reqps"))
    p.append(stat("5xx ratio", "Share of responses with a 5xx status (upstream's own and fragcache's 502/504).",
                  [(f'sum(rate(fragcache_http_requests_total{{{SEL}, code=~"5.."}}[{RI}])) / '
                    f"sum(rate(fragcache_http_requests_total{{{SEL}}}[{RI}]))", "5xx")],
                  unit="percentunit",
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01},
                              {"color": "red", "value": 0.05}]))
    p.append(stat("Page p99", "99th percentile of fragcache's response time.",
                  quantiles("fragcache_http_request_duration_seconds", [], SEL, qs=(0.99,)), unit="s",
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.5},
                              {"color": "red", "value": 1}]))
    p.append(stat("Fragment hit ratio", "Lookups answered from the cache (hit or updating) over all lookups.",
                  [(f'sum(rate(fragcache_fragment_lookups_total{{{SEL}, result=~"hit|updating"}}[{RI}])) / '
                    f"sum(rate(fragcache_fragment_lookups_total{{{SEL}}}[{RI}]))", "hit ratio")],
                  unit="percentunit"))

    p.append(row("Traffic and pages"))
    p.append(timeseries("Requests by status code", "Responses per second by HTTP status.",
                        [(f"sum by (code) (rate(fragcache_http_requests_total{{{SEL}}}[{RI}]))", "{{code}}")],
                        unit="reqps", stack=True))
    p.append(timeseries("Page latency", "Response time quantiles over all requests.",
                        quantiles("fragcache_http_request_duration_seconds", [], SEL), unit="s"))
    p.append(timeseries("Requests in flight", "Requests being served right now, per instance.",
                        [(f"sum by (instance) (fragcache_http_requests_in_flight{{{SEL}}})", "{{instance}}")]))
    p.append(timeseries("Page compositions", "Composed pages: complete, or degraded (a placeholder, alt or except rendered).",
                        [(f"sum by (outcome) (rate(fragcache_page_compositions_total{{{SEL}}}[{RI}]))", "{{outcome}}")],
                        unit="reqps", stack=True))
    p.append(timeseries("Includes per page", "Includes processed per composed page.",
                        quantiles("fragcache_page_includes", [], SEL, qs=(0.5, 0.99))))
    p.append(timeseries("ESI errors", "Parse errors, depth and include limits, disallowed hosts, loops.",
                        [(f"sum by (reason) (rate(fragcache_esi_errors_total{{{SEL}}}[{RI}]))", "{{reason}}")],
                        unit="ops"))

    p.append(row("Fragments"))
    p.append(timeseries("Lookups by result",
                        "hit: fresh; updating: stale served while one refresh runs; stale: stale served, no refresh "
                        "running; miss: not cached; bypass: uncacheable fragment.",
                        [(f"sum by (result) (rate(fragcache_fragment_lookups_total{{{FRAG}}}[{RI}]))", "{{result}}")],
                        unit="ops", stack=True))
    p.append(timeseries("Hit ratio by fragment", "(hit + updating) / all lookups, per fragment.",
                        [(f'sum by (fragment) (rate(fragcache_fragment_lookups_total{{{FRAG}, result=~"hit|updating"}}[{RI}])) / '
                          f"sum by (fragment) (rate(fragcache_fragment_lookups_total{{{FRAG}}}[{RI}]))", "{{fragment}}")],
                        unit="percentunit"))
    p.append(timeseries("Fallbacks by action",
                        "What rendered instead of a fragment: placeholder, alt, except, or removed.",
                        [(f"sum by (action) (rate(fragcache_fragment_fallbacks_total{{{FRAG}}}[{RI}]))", "{{action}}")],
                        unit="ops", stack=True))
    p.append(timeseries("Fetches by result", "Fragment fetches per second by result (foreground and background).",
                        [(f"sum by (result) (rate(fragcache_fragment_fetches_total{{{FRAG}}}[{RI}]))", "{{result}}")],
                        unit="ops", stack=True))
    p.append(timeseries("Fetch errors by fragment", "Failed fragment fetches per fragment and reason.",
                        [(f'sum by (fragment, result) (rate(fragcache_fragment_fetches_total{{{FRAG}, result!="success"}}[{RI}]))',
                          "{{fragment}} {{result}}")], unit="ops"))
    p.append(timeseries("Coalesced lookups", "Lookups that joined a fetch already running instead of starting one.",
                        [(f"sum by (fragment) (rate(fragcache_fragment_coalesced_total{{{FRAG}}}[{RI}]))", "{{fragment}}")],
                        unit="ops"))
    p.append(state_timeline("Circuit breakers", "Breaker state per fragment host: closed, open or half-open.",
                            [(f"max by (upstream) (fragcache_upstream_breaker_state{{{SEL}}})", "{{upstream}}")],
                            [{"type": "value", "options": {
                                "0": {"text": "closed", "color": "green", "index": 0},
                                "1": {"text": "open", "color": "red", "index": 1},
                                "2": {"text": "half-open", "color": "orange", "index": 2}}}]))

    p.append(row("Upstreams"))
    p.append(timeseries("Upstream latency by upstream",
                        "Request duration to each upstream (pages and fragment fetches).",
                        quantiles("fragcache_upstream_request_duration_seconds", ["upstream"], SEL, qs=(0.5, 0.99),
                                  legend_prefix="{{upstream}} "), unit="s"))
    p.append(timeseries("Upstream requests by upstream", "Requests per second to each upstream.",
                        [(f"sum by (upstream) (rate(fragcache_upstream_request_duration_seconds_count{{{SEL}}}[{RI}]))",
                          "{{upstream}}")], unit="reqps"))
    p.append(timeseries("Upstream requests in flight", "Open requests to each upstream.",
                        [(f"sum by (upstream) (fragcache_upstream_requests_in_flight{{{SEL}}})", "{{upstream}}")]))

    p.append(row("Cache and refresh"))
    p.append(timeseries("Cache size", "Cost of the stored fragments against the budget (--cache-size).",
                        [(f"sum by (instance) (fragcache_cache_cost_bytes{{{SEL}}})", "{{instance}} used"),
                         (f"sum by (instance) (fragcache_cache_max_cost_bytes{{{SEL}}})", "{{instance}} max")],
                        unit="bytes", w=6))
    p.append(timeseries("Evictions and refused sets",
                        "Evicted entries; sets rejected by the admission policy; sets dropped under contention.",
                        [(f"sum(rate(fragcache_cache_evictions_total{{{SEL}}}[{RI}]))", "evictions"),
                         (f"sum(rate(fragcache_cache_sets_rejected_total{{{SEL}}}[{RI}]))", "rejected sets"),
                         (f"sum(rate(fragcache_cache_sets_dropped_total{{{SEL}}}[{RI}]))", "dropped sets")],
                        unit="ops", w=6))
    p.append(timeseries("Refresh queue", "Background refreshes waiting (bounded by --refresh-queue).",
                        [(f"sum by (instance) (fragcache_refresh_queue_length{{{SEL}}})", "{{instance}}")], w=6))
    p.append(timeseries("Refreshes dropped", "Refreshes shed because the queue was full.",
                        [(f"sum by (instance) (rate(fragcache_refresh_dropped_total{{{SEL}}}[{RI}]))", "{{instance}}")],
                        unit="ops", w=6))

    p.append(row("Shared L2 (Redis)"))
    l2_sent = f'fragcache_l2_requests_total{{{SEL}, result!="breaker_open"}}'
    l2_failed = f'fragcache_l2_requests_total{{{SEL}, result=~"error|timeout"}}'
    l2_gets = f'fragcache_l2_requests_total{{{SEL}, op="get", result=~"hit|stale|miss|corrupt"}}'
    l2_hits = f'fragcache_l2_requests_total{{{SEL}, op="get", result=~"hit|stale"}}'
    waits = f"fragcache_l2_lock_waits_total{{{SEL}}}"
    p.append(stat("L2 up", "Instances whose Redis breaker is closed, of the instances that report one. "
                  "Below the total: those instances serve from their own L1 and their own fetches.",
                  [(f"sum(fragcache_l2_up{{{SEL}}})", "up"), (f"count(fragcache_l2_up{{{SEL}}})", "of")], w=6,
                  thresholds=[{"color": "red", "value": None}, {"color": "green", "value": 1}]))
    p.append(stat("L2 hit ratio", "Gets answered with an entry (fresh or stale) over gets Redis answered.",
                  [(f"sum(rate({l2_hits}[{RI}])) / sum(rate({l2_gets}[{RI}]))", "hit ratio")],
                  unit="percentunit", w=6))
    p.append(stat("L2 error ratio", "Requests sent to Redis that failed or exceeded --redis-timeout.",
                  [(f"sum(rate({l2_failed}[{RI}])) / sum(rate({l2_sent}[{RI}]))", "errors")],
                  unit="percentunit", w=6,
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.01},
                              {"color": "red", "value": 0.05}]))
    p.append(stat("Lock waits unfilled", "Waits for another replica's fill that ended without its answer "
                  "(holder gone: expired; wait ran out: timeout).",
                  [(f'sum(rate(fragcache_l2_lock_waits_total{{{SEL}, result=~"expired|timeout"}}[{RI}])) / '
                    f"sum(rate({waits}[{RI}]))", "unfilled")],
                  unit="percentunit", w=6,
                  thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 0.05},
                              {"color": "red", "value": 0.1}]))
    p.append(state_timeline("L2 up by instance", "Whether each instance uses Redis (breaker closed) or holds it "
                            "for down (open); readiness never depends on it.",
                            [(f"max by (instance) (fragcache_l2_up{{{SEL}}})", "{{instance}}")],
                            [{"type": "value", "options": {
                                "0": {"text": "down", "color": "red", "index": 0},
                                "1": {"text": "up", "color": "green", "index": 1}}}], h=6))
    p.append(timeseries("L2 requests by op and result",
                        "Redis requests per second. get: hit, stale, miss, corrupt (a value that is no entry of "
                        "the key, treated as a miss); all ops: error, timeout, breaker_open (not sent).",
                        [(f"sum by (op, result) (rate(fragcache_l2_requests_total{{{SEL}}}[{RI}]))",
                          "{{op}} {{result}}")], unit="ops", stack=True))
    p.append(timeseries("L2 latency by op", "Redis request duration; compare with --redis-timeout (default 25ms).",
                        quantiles("fragcache_l2_request_duration_seconds", ["op"], SEL, qs=(0.5, 0.99),
                                  legend_prefix="{{op}} "), unit="s"))
    p.append(timeseries("L2 hit and error ratio", "Hit ratio of gets and error ratio of sent requests.",
                        [(f"sum(rate({l2_hits}[{RI}])) / sum(rate({l2_gets}[{RI}]))", "hit ratio"),
                         (f"sum(rate({l2_failed}[{RI}])) / sum(rate({l2_sent}[{RI}]))", "error ratio")],
                        unit="percentunit"))
    p.append(timeseries("Lock waits by result",
                        "Waits for a fill lock held by another replica: filled (its answer arrived), failed (its "
                        "fetch failed; backing off together), expired (holder gone, taken over), timeout.",
                        [(f"sum by (result) (rate({waits}[{RI}]))", "{{result}}")], unit="ops", stack=True,
                        w=12))
    p.append(timeseries("L2 failures by op",
                        "Requests that failed (error), ran past --redis-timeout (timeout) or were not sent because "
                        "the breaker holds Redis for down (breaker_open). Each costs a page at most one timeout.",
                        [(f'sum by (op, result) (rate(fragcache_l2_requests_total{{{SEL}, '
                          f'result=~"error|timeout|breaker_open"}}[{RI}]))', "{{op}} {{result}}")],
                        unit="ops", w=12))

    p.append(row("Go runtime"))
    p.append(timeseries("Goroutines and threads", "",
                        [(f"sum by (instance) (go_goroutines{{{SEL}}})", "{{instance}} goroutines"),
                         (f"sum by (instance) (go_threads{{{SEL}}})", "{{instance}} threads")], w=6))
    p.append(timeseries("Memory", "Resident set size and Go heap in use.",
                        [(f"sum by (instance) (process_resident_memory_bytes{{{SEL}}})", "{{instance}} RSS"),
                         (f"sum by (instance) (go_memstats_heap_inuse_bytes{{{SEL}}})", "{{instance}} heap in use")],
                        unit="bytes", w=6))
    p.append(timeseries("CPU", "CPU seconds per second.",
                        [(f"sum by (instance) (rate(process_cpu_seconds_total{{{SEL}}}[{RI}]))", "{{instance}}")],
                        unit="short", w=6))
    p.append(timeseries("GC", "Garbage collections per second and the longest recent pause.",
                        [(f"sum by (instance) (rate(go_gc_duration_seconds_count{{{SEL}}}[{RI}]))", "{{instance}} GC/s"),
                         (f'max by (instance) (go_gc_duration_seconds{{{SEL}, quantile="1"}})', "{{instance}} max pause (s)")],
                        w=6))
    p.append(timeseries("Open file descriptors", "Open descriptors against the limit.",
                        [(f"sum by (instance) (process_open_fds{{{SEL}}})", "{{instance}} open"),
                         (f"sum by (instance) (process_max_fds{{{SEL}}})", "{{instance}} max")], w=6))

    return {
        "uid": "fragcache",
        "title": "fragcache",
        "description": "fragcache: pages, fragments, upstreams, cache, refresh queue, breakers, shared L2, Go runtime.",
        "tags": ["fragcache", "esi", "proxy"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
            var_query("job", "Job", "label_values(fragcache_build_info, job)"),
            var_query("instance", "Instance", 'label_values(fragcache_build_info{job=~"$job"}, instance)'),
            var_query("fragment", "Fragment", 'label_values(fragcache_fragment_lookups_total{job=~"$job"}, fragment)'),
        ]},
        "panels": p,
    }


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fragcache.json")
    text = json.dumps(build(), indent=2, sort_keys=False) + "\n"
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        with open(out, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit("deploy/grafana/fragcache.json is stale: run python3 deploy/grafana/dashboard.py")
        print("fragcache.json is up to date")
        return
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote", out)


if __name__ == "__main__":
    main()
