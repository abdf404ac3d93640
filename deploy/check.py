"""Checks of deploy/ that need a real parser, called by deploy/check.sh (which provides PyYAML
and the external tools). Every check prints one line; any failure exits non-zero at the end.

    python3 deploy/check.py yaml                   parse every YAML file under deploy/
    python3 deploy/check.py sync-rules [--write]   PrometheusRule == alerts.yml (or rewrite it)
    python3 deploy/check.py strip-annotations OUT  alerts.yml without description/runbook
    python3 deploy/check.py alerts                 annotations, labels, metric names
    python3 deploy/check.py dashboard OUT          dashboard structure; its PromQL as a rules file
    python3 deploy/check.py compose                references inside docker-compose.yml
    python3 deploy/check.py k8s RENDERED OUT       contracts of a rendered overlay; OUT = the
                                                   documents kubernetes-validate knows (no CRDs)
"""

import json
import re
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
RULE_CR = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "herald.json"
COMPOSE = DEPLOY / "docker-compose.yml"
METRICS_RS = ROOT / "src" / "telemetry" / "metrics.rs"

# Custom resources kubernetes-validate has no schema for: checked here for apiVersion/kind only.
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# The configuration contract (DESIGN §1.1) plus what herald reads besides.
KNOWN_ENV = {
    "HERALD_DATABASE_URL", "HERALD_AMQP_URL", "HERALD_AMQP_PREFIX", "HERALD_GRAPH_URL",
    "HERALD_GRAPH_VERSION", "HERALD_ACCESS_TOKEN", "HERALD_APP_SECRET", "HERALD_VERIFY_TOKEN",
    "HERALD_METRICS_ADDR", "HERALD_HTTP_ADDR", "HERALD_DRAIN_SECONDS", "RUST_LOG",
    "HERALD_ADMIN_TOKEN", "HERALD_HASH_KEY", "HERALD_RETENTION", "HERALD_PURGE_INTERVAL",
    "HERALD_RECIPIENT_EVENTS", "HERALD_RECIPIENT_EVENTS_NUMBERS", "HERALD_RECIPIENT_EVENTS_QUEUE_MAX",
    "HERALD_EVENTS_WEBHOOK_URL", "HERALD_EVENTS_WEBHOOK_SECRET", "HERALD_EVENTS_WEBHOOK_CONCURRENCY",
    "HERALD_EVENTS_WEBHOOK_TIMEOUT",
}
SECRET_ENV = {"HERALD_DATABASE_URL", "HERALD_AMQP_URL", "HERALD_ACCESS_TOKEN",
              "HERALD_APP_SECRET", "HERALD_VERIFY_TOKEN", "HERALD_ADMIN_TOKEN", "HERALD_HASH_KEY",
              "HERALD_EVENTS_WEBHOOK_SECRET"}

failures = []


def ok(msg):
    print(f"  ok    {msg}")


def fail(msg):
    failures.append(msg)
    print(f"  FAIL  {msg}")


def check(cond, msg):
    (ok if cond else fail)(msg)
    return cond


def done():
    if failures:
        print(f"  {len(failures)} check(s) failed")
        sys.exit(1)


# --- metric names ----------------------------------------------------------------------------

def exported_metrics():
    """The names in src/telemetry/metrics.rs's ALL, read from the source (no build needed)."""
    src = METRICS_RS.read_text()
    consts = dict(re.findall(r'pub const ([A-Z_]+): &str = "([a-z_]+)";', src))
    body = re.search(r"pub const ALL: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
    return {consts[c] for c in re.findall(r"[A-Z_]+", body)}


def herald_names(text):
    """herald_* tokens, histogram suffixes folded to the family name."""
    names = set()
    for m in re.finditer(r"(?<![A-Za-z0-9_:])herald_[a-z_]+", text):
        n = m.group(0).rstrip("_")
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix):
                n = n[: -len(suffix)]
        names.add(n)
    return names


def check_names(what, text):
    known = exported_metrics()
    used = herald_names(text)
    unknown = sorted(used - known)
    check(not unknown, f"{what}: {len(used)} herald metrics, all exported by src/telemetry/metrics.rs"
          + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return used


# --- YAML ------------------------------------------------------------------------------------

def cmd_yaml():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))
    docs = 0
    for p in files:
        try:
            docs += sum(1 for d in yaml.safe_load_all(p.read_text()) if d is not None)
        except yaml.YAMLError as e:
            fail(f"{p.relative_to(ROOT)}: {e}")
    check(not failures, f"{len(files)} YAML files parse ({docs} documents)")
    cr_files = [p for p in files if "k8s" in p.parts and p.name != "kustomization.yaml"]
    for p in cr_files:
        for d in yaml.safe_load_all(p.read_text()):
            if d is None:
                continue
            if not (isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str)
                    and d.get("metadata", {}).get("name")):
                fail(f"{p.relative_to(ROOT)}: a document lacks apiVersion, kind or metadata.name")
    check(not failures, f"{len(cr_files)} Kubernetes manifest files have apiVersion, kind, metadata.name")


# --- alert rules -----------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, s):
    style = "|" if "\n" in s else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)


_Dumper.add_representer(str, _str)

RULE_CR_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by `deploy/check.sh --sync-rules`: edit that file,
# then regenerate. deploy/check.sh fails when the two differ.
"""


def cmd_sync_rules(write):
    rules = yaml.safe_load(ALERTS.read_text())
    cr = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "herald"},
        "spec": rules,
    }
    if write:
        RULE_CR.write_text(RULE_CR_HEADER + yaml.dump(cr, Dumper=_Dumper, sort_keys=False,
                                                      width=100, allow_unicode=True))
        ok(f"wrote {RULE_CR.relative_to(ROOT)}")
    current = yaml.safe_load(RULE_CR.read_text()) if RULE_CR.exists() else None
    check(current is not None and current.get("spec") == rules
          and current.get("kind") == "PrometheusRule",
          f"{RULE_CR.relative_to(ROOT)} wraps exactly deploy/prometheus/alerts.yml"
          + ("" if current and current.get("spec") == rules
             else " (run deploy/check.sh --sync-rules)"))


def cmd_strip_annotations(out):
    rules = yaml.safe_load(ALERTS.read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                r["annotations"] = {"summary": r["annotations"]["summary"]}
    Path(out).write_text(yaml.safe_dump(rules, sort_keys=False))


def cmd_alerts():
    text = ALERTS.read_text()
    rules = yaml.safe_load(text)
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    names = [a["alert"] for a in alerts]
    check(len(names) == len(set(names)), f"{len(alerts)} alerts, unique names")
    missing = [a["alert"] for a in alerts
               if not all(a.get("annotations", {}).get(k) for k in ("summary", "description", "runbook"))]
    check(not missing, "every alert has summary, description and runbook annotations"
          + (f" (missing: {', '.join(missing)})" if missing else ""))
    bad_sev = [a["alert"] for a in alerts
               if a.get("labels", {}).get("severity") not in ("critical", "warning", "info")]
    check(not bad_sev, "every alert has severity critical|warning|info"
          + (f" (not: {', '.join(bad_sev)})" if bad_sev else ""))
    # The list: each must have a rule.
    required = {
        "throughput stalled while backlog grows": "HeraldThroughputStalled",
        "error ratio high": "HeraldErrorRatioHigh",
        "sender stopped": "HeraldSenderStopped",
        "tier nearly exhausted": "HeraldTierNearlyExhausted",
        "dead-letters growing": "HeraldDeadLetterQueueGrowing",
        "budget nearly spent": "HeraldCampaignBudgetNearlySpent",
        "worker down": "HeraldWorkerDown",
        "worker absent": "HeraldWorkersAbsent",
    }
    absent = [k for k, v in required.items() if v not in names]
    check(not absent, "the required alerts exist" + (f" (missing: {', '.join(absent)})" if absent else ""))
    documented = (DEPLOY / "README.md").read_text()
    undocumented = [n for n in names if n not in documented]
    check(not undocumented, "every alert is explained in deploy/README.md"
          + (f" (not: {', '.join(undocumented)})" if undocumented else ""))
    used = check_names("alerts.yml", text)
    check(used, "alerts.yml uses herald metrics")


# --- dashboard -------------------------------------------------------------------------------

GRAFANA_VARS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "sender": ".*", "category": ".*", "portfolio": ".*", "currency": ".*", "market": ".*",
    "prefix": "herald", "namespace": ".*",
}


def _panels(panels):
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))


def cmd_dashboard(out):
    d = json.loads(DASHBOARD.read_text())
    check(d.get("uid") and d.get("title"), f"dashboard '{d.get('title')}' has uid and title")
    check(36 <= d.get("schemaVersion", 0) <= 41, f"schemaVersion {d.get('schemaVersion')}")
    tvars = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    check(tvars.get("DS_PROMETHEUS", {}).get("type") == "datasource"
          and tvars["DS_PROMETHEUS"].get("query") == "prometheus",
          "datasource is the templated variable DS_PROMETHEUS")
    for name in ("sender", "category", "portfolio", "prefix"):
        check(name in tvars, f"variable ${name}")
    undefined = [k for k in GRAFANA_VARS if not k.startswith("__") and k not in tvars]
    check(not undefined, "every variable the checks substitute is defined"
          + (f" (not: {undefined})" if undefined else ""))

    panels = list(_panels(d["panels"]))
    ids = [p["id"] for p in panels]
    check(len(ids) == len(set(ids)), f"{len(panels)} panels, unique ids")
    cells = {}
    overlap = []
    for p in panels:
        g = p["gridPos"]
        if g["x"] < 0 or g["x"] + g["w"] > 24:
            fail(f"panel {p['id']} '{p.get('title')}' is outside the 24-column grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    overlap.append((cells[(x, y)], p["id"]))
                cells[(x, y)] = p["id"]
    check(not overlap, "panels do not overlap" + (f" ({overlap[:3]})" if overlap else ""))

    rules, exprs = [], []
    for p in panels:
        if p["type"] == "row":
            continue
        ds = p.get("datasource", {})
        if ds.get("uid") != "${DS_PROMETHEUS}":
            fail(f"panel {p['id']} '{p['title']}' does not use ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            fail(f"panel {p['id']} '{p['title']}' has no query")
        for t in p.get("targets", []):
            expr = t["expr"]
            exprs.append(expr)
            concrete = re.sub(r"\$\{?(\w+)\}?", lambda m: GRAFANA_VARS.get(m.group(1), m.group(0)), expr)
            if "$" in concrete:
                fail(f"panel {p['id']} uses an unknown variable: {expr}")
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": concrete})
    for v in tvars.values():
        if v.get("type") == "query":
            exprs.append(v["query"])
    check(not [f for f in failures if "panel" in f], "every panel queries ${DS_PROMETHEUS}")
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]},
                                        sort_keys=False))
    ok(f"{len(rules)} panel queries written as recording rules for promtool to parse")
    used = check_names("herald.json", "\n".join(exprs))
    unused = sorted(exported_metrics() - used)
    check(not unused, "every exported metric has a panel"
          + (f" (no panel: {', '.join(unused)})" if unused else ""))


# --- compose ---------------------------------------------------------------------------------

def cmd_compose():
    c = yaml.safe_load(COMPOSE.read_text())
    services = c["services"]
    for name, s in services.items():
        for dep in s.get("depends_on", {}) or {}:
            if dep not in services:
                fail(f"compose: {name} depends on unknown service {dep}")
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                if not (DEPLOY / src).exists():
                    fail(f"compose: {name} mounts {src}, which does not exist")
        if s.get("build"):
            b = s["build"]
            ctx = (DEPLOY / b["context"]).resolve()
            if not (ctx / b["dockerfile"]).exists():
                fail(f"compose: {name} builds from a missing Dockerfile")
        env = s.get("environment", {}) or {}
        for k in env:
            if k.startswith("HERALD_") and k not in KNOWN_ENV and not (
                    name == "simulator" and k.startswith("HERALD_SIM_")):
                fail(f"compose: {name} sets {k}, which is not a herald setting")
    check(not failures, f"compose: {len(services)} services; dependencies, mounts, build, env names resolve")
    for need in ("rabbitmq", "postgres", "simulator", "migrate", "worker", "serve", "prometheus", "grafana"):
        check(need in services, f"compose: service {need}")
    check(services["worker"].get("deploy", {}).get("replicas", 1) >= 2, "compose: two workers")
    check(services["migrate"]["command"] == ["migrate"]
          and all(services[s]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
                  for s in ("worker", "serve")),
          "compose: workers and serve start after `herald migrate` succeeded")
    sim = services["simulator"]["command"]
    check("--addr" in sim and sim[sim.index("--addr") + 1].startswith("0.0.0.0:"),
          "compose: simulator listens on all interfaces")

    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    check({"herald-worker", "herald-serve"} <= jobs.keys(),
          "prometheus.yml: jobs herald-worker and herald-serve (the names the alerts match)")
    hosts = set()
    for j in jobs.values():
        for sc in j.get("static_configs", []):
            hosts |= {t.split(":")[0] for t in sc["targets"]}
        for sd in j.get("dns_sd_configs", []):
            hosts |= set(sd["names"])
    hosts.discard("localhost")
    check(hosts <= services.keys(), f"prometheus.yml: scrape targets are compose services ({', '.join(sorted(hosts))})")
    check(prom.get("rule_files") == ["alerts.yml"], "prometheus.yml: loads alerts.yml")
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    check("rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins,
          "rabbitmq: management and prometheus plugins enabled")

    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "herald.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    mounts = [v for v in services["grafana"]["volumes"] if v.startswith("./grafana/herald.json:")]
    check(mounts and mounts[0].split(":")[1].startswith(path + "/"),
          f"grafana: the dashboard is mounted where the provider looks ({path})")


# --- Kubernetes ------------------------------------------------------------------------------

def _env_of(docs):
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    return cms


def cmd_k8s(rendered, out, label):
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d["metadata"]["name"])
    crds = [d for d in docs if (d["apiVersion"], d["kind"]) in CRDS]
    plain = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRDS]
    unknown_cr = [f"{d['apiVersion']}/{d['kind']}" for d in plain if "." in d["apiVersion"].split("/")[0]
                  and not d["apiVersion"].startswith(("apps/", "batch/", "policy/", "autoscaling/",
                                                      "networking.k8s.io/", "rbac.authorization.k8s.io/"))]
    check(not unknown_cr, f"{label}: no custom resources besides KEDA and Prometheus Operator ones"
          + (f" ({unknown_cr})" if unknown_cr else ""))
    Path(out).write_text(yaml.safe_dump_all(plain, sort_keys=False))
    ok(f"{label}: {len(docs)} objects: " + ", ".join(f"{k} {len(v)}" for k, v in sorted(kinds.items())))
    ok(f"{label}: {len(crds)} custom resources (" + ", ".join(sorted({d['kind'] for d in crds}))
       + ") checked for apiVersion/kind only; kubernetes-validate has no schema for them")

    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    check(not kinds.get("Secret"), f"{label}: renders no Secret (secret.example.yaml is a template)")
    cms = _env_of(docs)
    config = next((v for k, v in cms.items() if k.startswith("herald-config")), None)
    if not check(config is not None, f"{label}: herald-config ConfigMap"):
        return
    stray = sorted(set(config) - KNOWN_ENV)
    check(not stray, f"{label}: ConfigMap holds only herald settings" + (f" (not: {stray})" if stray else ""))
    leaked = sorted(set(config) & SECRET_ENV)
    check(not leaked, f"{label}: no secret in the ConfigMap" + (f" ({leaked})" if leaked else ""))
    example = yaml.safe_load((DEPLOY / "k8s" / "base" / "secret.example.yaml").read_text())
    check(set(example["stringData"]) == SECRET_ENV and example["metadata"]["name"] == "herald-secrets",
          f"{label}: secret.example.yaml names herald-secrets and exactly the secret settings")
    drain = int(config.get("HERALD_DRAIN_SECONDS", "25"))
    prefix = config.get("HERALD_AMQP_PREFIX", "herald")

    for comp in ("worker", "serve"):
        dep = by.get(("Deployment", f"herald-{comp}"))
        if not check(dep is not None, f"{label}: Deployment herald-{comp}"):
            continue
        spec = dep["spec"]["template"]["spec"]
        c = spec["containers"][0]
        check(c["args"] == [comp], f"{label}: herald-{comp} runs `herald {comp}`")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        check(grace > drain, f"{label}: herald-{comp} grace period {grace}s > drain {drain}s")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz"
              and c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
              f"{label}: herald-{comp} liveness /healthz, readiness /readyz")
        res = c.get("resources", {})
        check(res.get("requests") and res.get("limits"), f"{label}: herald-{comp} has requests and limits")
        psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
        check(psc.get("runAsNonRoot") and csc.get("readOnlyRootFilesystem")
              and csc.get("allowPrivilegeEscalation") is False,
              f"{label}: herald-{comp} non-root, read-only root fs, no privilege escalation")
        refs = {e.get("configMapRef", {}).get("name") or e.get("secretRef", {}).get("name")
                for e in c.get("envFrom", [])}
        check(any(r and r.startswith("herald-config") for r in refs) and "herald-secrets" in refs,
              f"{label}: herald-{comp} env from herald-config + herald-secrets")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        check(ports.get("http") == 8080 and ports.get("metrics") == 9477,
              f"{label}: herald-{comp} ports http 8080, metrics 9477")
        pdbs = [d for d in docs if d["kind"] == "PodDisruptionBudget"
                and d["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()]
        check(len(pdbs) == 1, f"{label}: one PodDisruptionBudget covers herald-{comp}")
    check(by.get(("Service", "herald-serve")) is not None, f"{label}: Service herald-serve")
    job = by.get(("Job", "herald-migrate"))
    check(job is not None and job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"],
          f"{label}: Job herald-migrate runs `herald migrate`")

    scalers = kinds.get("ScaledObject", []) + kinds.get("HorizontalPodAutoscaler", [])
    check(len(scalers) == 1, f"{label}: exactly one autoscaler for the workers ({scalers})")
    so = by.get(("ScaledObject", "herald-worker"))
    if so:
        trig = so["spec"]["triggers"][0]
        check(trig["type"] == "rabbitmq" and trig["metadata"]["queueName"] == f"{prefix}.jobs",
              f"{label}: KEDA scales on the length of {prefix}.jobs")
        ta = by.get(("TriggerAuthentication", so["spec"]["triggers"][0]["authenticationRef"]["name"]))
        check(ta is not None and ta["spec"]["secretTargetRef"][0]["name"] == "herald-secrets",
              f"{label}: KEDA reads the broker URL from herald-secrets")
    pm = kinds.get("PodMonitor", []) + kinds.get("ServiceMonitor", [])
    check(pm, f"{label}: a PodMonitor/ServiceMonitor for the Prometheus Operator")
    pr = by.get(("PrometheusRule", "herald"))
    check(pr is not None and pr["spec"] == yaml.safe_load(ALERTS.read_text()),
          f"{label}: PrometheusRule carries alerts.yml")
    if prefix != "herald":
        fail(f"{label}: HERALD_AMQP_PREFIX={prefix}, but alerts.yml and the ScaledObject name herald.* queues")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "yaml":
        cmd_yaml()
    elif cmd == "sync-rules":
        cmd_sync_rules("--write" in args)
    elif cmd == "strip-annotations":
        cmd_strip_annotations(args[0])
    elif cmd == "alerts":
        cmd_alerts()
    elif cmd == "dashboard":
        cmd_dashboard(args[0])
    elif cmd == "compose":
        cmd_compose()
    elif cmd == "k8s":
        cmd_k8s(args[0], args[1], args[2])
    else:
        sys.exit(f"unknown command {cmd}")
    done()


if __name__ == "__main__":
    main()
