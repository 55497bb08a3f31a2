#!/usr/bin/env bash
# Validates the Helm chart deploy/helm/skiff without a Kubernetes cluster or GitHub:
#   1. installs helm and kubeconform from the Go module proxy (cached under $SKIFF_CACHE/tools);
#   2. makes Kubernetes' JSON schemas from the k8s.io/kubernetes module's OpenAPI spec
#      (deploy/helm/k8s-schemas.py; cached under $SKIFF_CACHE/k8s-schemas);
#   3. `helm lint --strict`, then renders the chart with its defaults, with MinIO for development
#      and with every option on (ci/all-on-values.yaml), and checks every manifest with
#      `kubeconform -strict` (unknown or misspelt fields fail);
#   4. runs the rendered start-up scripts (node ids, advertised addresses) with fake pod values,
#      and checks every SKIFF_* variable against what `skiff <role> --help` reads (needs the
#      built binary: SKIFF_BIN, else $CARGO_TARGET_DIR/debug/skiff);
#   5. checks the checks: a misspelt field and an impossible combination must fail.
# Cold: a few minutes (helm compiles); warm: seconds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/skiff"
cache="${SKIFF_CACHE:-$HOME/.cache/skiff}"
helm_version="v3.22.1"
kubeconform_version="v0.8.0"
# The Kubernetes release whose API the manifests are checked against.
k8s_version="1.37.2"

tool() { # name module version -> path of the binary, installed once
  local name="$1" module="$2" version="$3"
  local dir="$cache/tools/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    echo "installing $name $version (go install $module@$version) ..." >&2
    GOBIN="$dir" go install "$module@$version" >&2
  fi
  echo "$dir/$name"
}

command -v go >/dev/null 2>&1 || { echo "validate: Go is required (see README)" >&2; exit 1; }
helm="$(tool helm helm.sh/helm/v3/cmd/helm "$helm_version")"
kubeconform="$(tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$kubeconform_version")"

schemas="$cache/k8s-schemas"
if [ ! -f "$schemas/v$k8s_version-standalone-strict/statefulset-apps-v1.json" ]; then
  echo "making Kubernetes $k8s_version JSON schemas from k8s.io/kubernetes's OpenAPI spec ..." >&2
  module_dir="$(go mod download -json "k8s.io/kubernetes@v$k8s_version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  python3 "$here/k8s-schemas.py" "$module_dir/api/openapi-spec/swagger.json" "$schemas" "$k8s_version"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() { # name, then helm template arguments
  local name="$1"
  shift
  "$helm" template skiff "$chart" --namespace streaming "$@" >"$work/$name.yaml"
  "$kubeconform" -strict -summary -kubernetes-version "$k8s_version" \
    -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$work/$name.yaml"
}

echo "== helm lint"
"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$chart/ci/all-on-values.yaml"

echo "== defaults (Deployment + HPA)"
check defaults
echo "== MinIO for development"
check minio --set minio.enabled=true --set otel.enabled=true --set otel.endpoint=http://otel-collector:4318
echo "== every option on (StatefulSet brokers, per-broker Services)"
check all-on -f "$chart/ci/all-on-values.yaml"

echo "== start-up scripts"
# The container's shell script of `component` in `file`, with `exec skiff` replaced by a print.
script() {
  python3 - "$1" "$2" <<'PY'
import sys, yaml
path, component = sys.argv[1:]
for doc in yaml.safe_load_all(open(path)):
    if doc and doc["kind"] in ("Deployment", "StatefulSet") and doc["metadata"]["name"].endswith(component):
        c = doc["spec"]["template"]["spec"]["containers"][0]
        print(c["args"][0].replace("exec skiff", 'echo "$SKIFF_NODE_ID $SKIFF_KAFKA_ADVERTISE" #'))
PY
}
expect() { # what, expected, actual
  if [ "$2" != "$3" ]; then
    echo "FAIL $1: expected '$2', got '$3'" >&2
    exit 1
  fi
  echo "ok   $1: $3"
}
expect "Deployment broker at 10.1.2.3" "167838211 10.1.2.3:9092" \
  "$(POD_IP=10.1.2.3 sh -c "$(script "$work/defaults.yaml" -broker)")"
expect "Deployment broker at 192.168.0.1 (31 bits)" "$(( (192 << 24 | 168 << 16 | 1) & 2147483647 )) 192.168.0.1:9092" \
  "$(POD_IP=192.168.0.1 sh -c "$(script "$work/defaults.yaml" -broker)")"
if POD_IP=fd00::1 sh -c "$(script "$work/defaults.yaml" -broker)" >/dev/null 2>&1; then
  echo "FAIL an IPv6 pod IP must stop a Deployment broker" >&2
  exit 1
fi
expect "StatefulSet broker 7" "1007 broker-7.kafka.example.com:9094" \
  "$(HOSTNAME=streams-broker-7 sh -c "$(script "$work/all-on.yaml" -broker)")"
expect "controller 2" "3 " "$(HOSTNAME=skiff-controller-2 sh -c "$(script "$work/defaults.yaml" -controller)")"
expect "voters" "1=skiff-controller-0.skiff-controller.streaming.svc.cluster.local:9093,2=skiff-controller-1.skiff-controller.streaming.svc.cluster.local:9093,3=skiff-controller-2.skiff-controller.streaming.svc.cluster.local:9093" \
  "$(grep -A1 'name: SKIFF_VOTERS' "$work/defaults.yaml" | sed -n 's/.*value: "\(.*\)"/\1/p')"

echo "== every SKIFF_* variable the chart sets is one its role reads"
# A role ignores variables of settings it does not use, so a misspelt or misplaced name would be
# silently dropped: compare with `skiff <role> --help` (SKIFF_LOG is read by main.rs itself).
skiff_bin="${SKIFF_BIN:-${CARGO_TARGET_DIR:-$cache/target}/debug/skiff}"
[ -x "$skiff_bin" ] || { echo "validate: no skiff binary at $skiff_bin (build first, or set SKIFF_BIN)" >&2; exit 1; }
for role in controller broker; do
  "$skiff_bin" "$role" --help >"$work/$role.help"
  for file in defaults all-on; do
    python3 - "$work/$file.yaml" "$role" "$work/$role.help" <<'PY'
import re, sys, yaml
path, role, help_path = sys.argv[1:]
known = set(re.findall(r"SKIFF_[A-Z0-9_]+", open(help_path).read())) | {"SKIFF_LOG"}
used = set()
for doc in yaml.safe_load_all(open(path)):
    if not doc or doc["kind"] not in ("Deployment", "StatefulSet"):
        continue
    for c in doc["spec"]["template"]["spec"]["containers"]:
        if c["name"] != role:
            continue
        used |= {e["name"] for e in c.get("env", []) if e["name"].startswith("SKIFF_")}
        used |= set(re.findall(r"export (SKIFF_[A-Z0-9_]+)", " ".join(c.get("args", []))))
unknown = sorted(used - known)
if not used or unknown:
    sys.exit("%s: %s sets %s, which `skiff %s` does not read" % (path, role, unknown or "nothing", role))
print("ok   %s (%s): %d SKIFF_* variables, all read by `skiff %s`" % (role, path.rsplit("/", 1)[-1], len(used), role))
PY
  done
done

echo "== the checks can fail"
sed 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' "$work/defaults.yaml" >"$work/misspelt.yaml"
if "$kubeconform" -strict -kubernetes-version "$k8s_version" \
  -schema-location "$schemas/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
  "$work/misspelt.yaml" >/dev/null 2>&1; then
  echo "FAIL kubeconform accepted a misspelt field" >&2
  exit 1
fi
echo "ok   a misspelt field is refused"
if "$helm" template skiff "$chart" --set brokers.perBrokerServices.enabled=true >/dev/null 2>&1; then
  echo "FAIL per-broker Services were rendered for a Deployment" >&2
  exit 1
fi
echo "ok   per-broker Services need brokers.workload=StatefulSet"
echo "chart valid"
