#!/usr/bin/env bash
# The main job: a local control plane, Kiln's CRDs, the operator, and the user's tutorial applied
# with kubectl, step by step, with a readable summary of what each step did.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
k() { echo "\$ kubectl $*" | sed "s|--kubeconfig=[^ ]* ||"; kubectl --kubeconfig="$KUBECONFIG" "$@"; }

say "Local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok node) on 127.0.0.1"
KUBECONFIG="$(kiln cluster up)"
export KUBECONFIG
k get nodes -o wide

say "Kiln's CRDs"
k apply --server-side -f crds/
k wait --for=condition=Established crd/artifacts.kiln.dev crd/workloads.kiln.dev crd/deployments.kiln.dev

NS=kiln-demo
k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
k delete workloads.kiln.dev,artifacts.kiln.dev --all -n "$NS" --wait=true >/dev/null

say "The operator (kiln run), logging to $(kiln cluster status --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["stateDir"])')/logs/operator.log"
logdir="$(dirname "$KUBECONFIG")/logs"
kiln run >"$logdir/operator.log" 2>&1 &
operator=$!
cleanup() { kill "$operator" 2>/dev/null && wait "$operator" 2>/dev/null || true; }
trap cleanup EXIT
until k get validatingwebhookconfiguration kiln.dev >/dev/null 2>&1; do
  kill -0 "$operator" || { tail -30 "$logdir/operator.log"; exit 1; }; sleep 0.5; done
echo "operator running (pid $operator), webhooks registered"

wait_for() {  # wait_for <resource> <jsonpath> <value>
  k wait -n "$NS" --for=jsonpath="$2"="$3" "$1" --timeout=60s >/dev/null
}
pods() { k get pods -n "$NS" -L kiln.dev/spec-digest -L kiln.dev/revision; }

say "Step 1: a Workload with an inline artifact"
k apply -n "$NS" -f examples/01-workload-with-inline-artifact.yaml
wait_for workload.kiln.dev/my-app '{.status.state}' Running
k get kiln -n "$NS"
pods

say "Step 2a: patch the artifact's description (metadata: restarts nothing)"
before=$(k get pods -n "$NS" -o name)
k patch artifact.kiln.dev my-app -n "$NS" --type merge -p '{"spec":{"description":"v2"}}'
wait_for artifact.kiln.dev/my-app '{.status.observedGeneration}' "$(k get artifact.kiln.dev my-app -n "$NS" -o jsonpath='{.metadata.generation}')"
[ "$before" = "$(k get pods -n "$NS" -o name)" ] && echo "same pods: nothing restarted"

say "Step 2b: replace the artifact (new image and probes: the workload restarts onto it)"
k replace -n "$NS" -f examples/02b-artifact-my-app.yaml
digest=$(k get artifact.kiln.dev my-app -n "$NS" -o jsonpath='{.status.specDigest}')
until [ "$(k get workload.kiln.dev my-app -n "$NS" -o jsonpath='{.status.artifact.specDigest}')" = "$digest" ]; do sleep 0.5; done
wait_for workload.kiln.dev/my-app '{.status.state}' Running
k get artifacts.kiln.dev -n "$NS" -o wide
pods

say "Step 2c: stop the workload, then start it again"
k patch workload.kiln.dev my-app -n "$NS" --type merge -p '{"spec":{"state":"Stopped"}}'
wait_for workload.kiln.dev/my-app '{.status.conditions[?(@.type=="Ready")].reason}' Stopped
pods 2>&1
k patch workload.kiln.dev my-app -n "$NS" --type merge -p '{"spec":{"state":"Running"}}'
wait_for workload.kiln.dev/my-app '{.status.state}' Running
pods

say "Summary"
k get kiln -n "$NS"
echo
k get events -n "$NS" --field-selector involvedObject.kind=Workload \
  --sort-by=.lastTimestamp -o custom-columns=REASON:.reason,MESSAGE:.message
cat <<EOT

The cluster keeps running:  export KUBECONFIG=$KUBECONFIG
Run the operator again:     .venv/bin/kiln run
Stop everything:            .venv/bin/kiln cluster down
EOT
