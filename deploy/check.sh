#!/usr/bin/env bash
# Offline validation of everything under deploy/. CI runs it; so can you, any number of times.
#
#   deploy/check.sh                 validate
#   deploy/check.sh --sync-rules    first rewrite deploy/k8s/base/prometheusrule.yaml from
#                                   deploy/prometheus/alerts.yml, then validate
#
# What it checks, and with what:
#   1. every YAML file parses; every manifest has apiVersion/kind/name       (PyYAML)
#   2. alerts.yml: rule syntax and PromQL; unit tests in alerts_test.yml;
#      prometheus.yml                                                        (promtool)
#      annotations, required alerts, metric names vs src/telemetry/metrics.rs,
#      PrometheusRule == alerts.yml                                          (check.py)
#   3. herald.json: structure, variables, grid; every panel's PromQL parsed  (check.py + promtool)
#   4. docker-compose.yml: schema                                            (docker compose /
#      docker-compose config); references between services, files, jobs     (check.py)
#   5. Kubernetes: base and both overlays rendered                           (kubectl kustomize)
#      and validated against the Kubernetes 1.30 and 1.37 schemas            (kubernetes-validate
#      --strict); KEDA/Prometheus-Operator resources, which it has no schema for, are
#      checked for apiVersion/kind and herald's contracts                    (check.py)
#      Without kubectl/kustomize, each manifest file is validated on its own.
#
# Tools come from Debian and PyPI only, into a cache (HERALD_CHECK_CACHE, default
# ~/.cache/herald-deploy-check), so a second run installs nothing:
#   promtool             extracted from Debian's `prometheus` package (no server installed or started)
#   PyYAML, kubernetes-validate   pip, into a venv in the cache
#   docker-compose       Debian package, only when neither `docker compose` nor `docker-compose`
#                        exists and we are root; otherwise the schema step is skipped (said so).
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE="${HERALD_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-deploy-check}"
KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_SCHEMAS=(1.30.0 1.37.0)
mkdir -p "$CACHE/bin"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*"; }
note() { printf '  note  %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

apt_updated=""
apt_update_once() {
    [ -n "$apt_updated" ] && return 0
    as_root apt-get update -qq >/dev/null && apt_updated=1
}

# --- tools -----------------------------------------------------------------------------------
step "tools"

# Python with PyYAML and kubernetes-validate, in a venv of our own.
VENV="$CACHE/venv"
if ! "$VENV/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" PyYAML
fi
PY="$VENV/bin/python"
echo "  python       $("$PY" --version 2>&1), PyYAML $("$PY" -c 'import yaml; print(yaml.__version__)')"
echo "  kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1)"

# promtool: on PATH, cached, or taken out of Debian's prometheus package.
PROMTOOL="$(command -v promtool || true)"
if [ -z "$PROMTOOL" ]; then
    PROMTOOL="$CACHE/bin/promtool"
    if ! [ -x "$PROMTOOL" ]; then
        dl="$WORK/deb"; mkdir -p "$dl"; chmod 777 "$dl"
        if ! (cd "$dl" && apt-get download prometheus >/dev/null 2>&1); then
            apt_update_once || { echo "cannot run apt-get update (not root?); install promtool" >&2; exit 1; }
            (cd "$dl" && apt-get download prometheus >/dev/null 2>&1)
        fi
        dpkg-deb --fsys-tarfile "$dl"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$PROMTOOL.tmp"
        chmod +x "$PROMTOOL.tmp" && mv "$PROMTOOL.tmp" "$PROMTOOL"
    fi
fi
echo "  promtool     $("$PROMTOOL" --version 2>&1 | head -1)"

# Kustomize renderer: kubectl's built-in kustomize, or a standalone kustomize.
KUSTOMIZE=()
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
    echo "  kustomize    kubectl $(kubectl version --client 2>/dev/null | grep -i kustomize | head -1)"
elif command -v kustomize >/dev/null; then
    KUSTOMIZE=(kustomize build)
    echo "  kustomize    $(kustomize version 2>&1 | head -1)"
else
    note "no kubectl or kustomize: manifests are validated file by file, overlays not rendered"
fi

# Compose schema: Docker's compose plugin, or the docker-compose package (v1, same schema).
COMPOSE=()
if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
    COMPOSE=(docker-compose)
elif apt_update_once && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
fi
if [ ${#COMPOSE[@]} -gt 0 ]; then
    echo "  compose      ${COMPOSE[*]} $("${COMPOSE[@]}" version --short 2>/dev/null || true)"
else
    note "no docker compose / docker-compose: compose schema not checked (references still are)"
fi

# --- 1. YAML ---------------------------------------------------------------------------------
step "YAML"
"$PY" deploy/check.py yaml

# --- 2. alerts -------------------------------------------------------------------------------
step "Prometheus rules and config"
if [ "${1:-}" = "--sync-rules" ]; then
    "$PY" deploy/check.py sync-rules --write
else
    "$PY" deploy/check.py sync-rules
fi
"$PROMTOOL" check rules deploy/prometheus/alerts.yml
"$PROMTOOL" check config deploy/prometheus/prometheus.yml
# Unit tests run against the rules with summary kept and the longer prose stripped, so the
# tests pin behaviour and the wording of descriptions and runbooks can change freely.
mkdir -p "$WORK/rules"
"$PY" deploy/check.py strip-annotations "$WORK/rules/alerts.yml"
cp deploy/prometheus/alerts_test.yml "$WORK/rules/"
"$PROMTOOL" test rules "$WORK/rules/alerts_test.yml"
"$PY" deploy/check.py alerts

# --- 3. dashboard ----------------------------------------------------------------------------
step "Grafana dashboard"
"$PY" deploy/check.py dashboard "$WORK/dashboard-rules.yml"
"$PROMTOOL" check rules "$WORK/dashboard-rules.yml" | sed 's#'"$WORK"'/##'

# --- 4. compose ------------------------------------------------------------------------------
step "docker compose"
if [ ${#COMPOSE[@]} -gt 0 ]; then
    "${COMPOSE[@]}" -f deploy/docker-compose.yml config -q
    echo "  ok    ${COMPOSE[*]} config: deploy/docker-compose.yml is a valid compose file"
fi
"$PY" deploy/check.py compose

# --- 5. Kubernetes ---------------------------------------------------------------------------
step "Kubernetes"
validate() { # FILE LABEL
    for v in "${K8S_SCHEMAS[@]}"; do
        if out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$1" 2>&1)"; then
            echo "  ok    $2: valid against Kubernetes $v (strict)"
        else
            printf '%s\n' "$out" | sed 's/^/        /'
            echo "  FAIL  $2: invalid against Kubernetes $v"
            return 1
        fi
    done
}
if [ ${#KUSTOMIZE[@]} -gt 0 ]; then
    for dir in deploy/k8s/base deploy/k8s/overlays/staging deploy/k8s/overlays/production; do
        name="${dir#deploy/k8s/}"
        "${KUSTOMIZE[@]}" "$dir" > "$WORK/rendered.yaml"
        if [ "$name" = base ]; then
            # The base has no autoscaler (the overlays add one): check that it renders and validates.
            "$PY" - "$WORK/rendered.yaml" "$WORK/plain.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = lambda d: d["apiVersion"].split("/")[0].endswith((".sh", ".coreos.com"))
yaml.safe_dump_all([d for d in docs if not crd(d)], open(sys.argv[2], "w"))
print(f"  ok    base: renders {len(docs)} objects")
PY
        else
            "$PY" deploy/check.py k8s "$WORK/rendered.yaml" "$WORK/plain.yaml" "$name"
        fi
        validate "$WORK/plain.yaml" "$name"
    done
else
    find deploy/k8s -name '*.yaml' ! -name kustomization.yaml | sort | while read -r f; do
        "$PY" - "$f" "$WORK/plain.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = lambda d: d["apiVersion"].split("/")[0].endswith((".sh", ".coreos.com"))
yaml.safe_dump_all([d for d in docs if not crd(d)], open(sys.argv[2], "w"))
PY
        if [ -s "$WORK/plain.yaml" ] && [ "$(cat "$WORK/plain.yaml")" != "[]" ]; then
            validate "$WORK/plain.yaml" "$f"
        else
            echo "  ok    $f: custom resources only (apiVersion/kind checked above)"
        fi
    done
fi

printf '\ndeploy/check.sh: all checks passed\n'
