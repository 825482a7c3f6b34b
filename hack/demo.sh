#!/usr/bin/env bash
# The main job: a local control plane, Kiln's CRDs, the operator, and the user's tutorial applied
# with kubectl, step by step, with a readable summary of what each step did.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
kc() { kubectl --kubeconfig="$KUBECONFIG" "$@"; }   # quiet, for captured output
k() { echo "\$ kubectl $*" | sed "s|--kubeconfig=[^ ]* ||"; kubectl --kubeconfig="$KUBECONFIG" "$@"; }
kk() { echo "\$ kubectl kiln $*"; kubectl kiln "$@"; }   # the kubectl plugin (it reads $KUBECONFIG)

say "Local cluster on 127.0.0.1: control plane, a simulated node (kwok), a real node (containerd, kubelet), a registry"
KUBECONFIG="$(kiln cluster up)"
export KUBECONFIG
k get nodes -o wide -L kiln.dev/node
real=$(kiln cluster status --json | python3 -c 'import json,sys;print(int("slot" in json.load(sys.stdin)["realNode"]))')
if [ "$real" = 1 ]; then
  say "Images (built with buildah from the project's Dockerfiles, cached) in the local registry"
  kiln images build --push
else
  echo "no real node here (see \`kiln cluster status\`): pods are simulated, and the model cannot be called"
fi

# The model's answer from this host, through its Service's ClusterIP (kube-proxy on the real node).
predict() {  # predict <service> [expected version]: wait for the answer (pods roll over), print it
  local ip url out
  ip=$(kc get service "$1" -n "$NS" -o jsonpath='{.spec.clusterIP}')
  url="http://$ip:8080/predict"
  echo "\$ curl -d '{\"features\": [1, 2, 3]}' $url"
  for _ in $(seq 120); do
    out=$(curl -sf -m 2 -d '{"features": [1, 2, 3]}' "$url" || true)
    if [ -n "$out" ] && { [ -z "${2:-}" ] || [[ "$out" == *"\"version\": \"$2\""* ]]; }; then echo "$out"; return 0; fi
    sleep 0.5
  done
  echo "ERROR: $url did not answer${2:+ with version $2}"; return 1
}

say "Kiln's CRDs"
k apply --server-side -f crds/
k wait --for=condition=Established crd/artifacts.kiln.dev crd/workloads.kiln.dev crd/deployments.kiln.dev \
  crd/approvals.kiln.dev crd/approvalpolicies.kiln.dev

NS=kiln-demo
kc delete namespace "$NS" --ignore-not-found --wait=true >/dev/null   # a fresh start on every run

say "The operator (kiln run), logging to $(kiln cluster status --json | python3 -c 'import json,sys;print(json.load(sys.stdin)["stateDir"])')/logs/operator.log"
logdir="$(dirname "$KUBECONFIG")/logs"
kiln run >"$logdir/operator.log" 2>&1 &
operator=$!
cleanup() { kill "$operator" 2>/dev/null && wait "$operator" 2>/dev/null || true; }
trap cleanup EXIT
until kc get validatingwebhookconfiguration kiln.dev >/dev/null 2>&1; do
  kill -0 "$operator" || { tail -30 "$logdir/operator.log"; exit 1; }; sleep 0.5; done
echo "operator running (pid $operator), webhooks registered"
k create namespace "$NS"
until kc get serviceaccount default -n "$NS" >/dev/null 2>&1; do sleep 0.2; done

wait_for() {  # wait_for <resource> <jsonpath> <value>
  kc wait -n "$NS" --for=jsonpath="$2"="$3" "$1" --timeout=120s >/dev/null
}
pods() { k get pods -n "$NS" -L kiln.dev/spec-digest -L kiln.dev/revision; }

say "Step 1: a Workload with an inline artifact"
k apply -n "$NS" -f examples/01-workload-with-inline-artifact.yaml
wait_for workload.kiln.dev/my-app '{.status.state}' Running
k get kiln -n "$NS"
pods
[ "$real" = 1 ] && { echo "Test it: the model answers through the development Service my-app-dev"; predict my-app-dev v1; }

say "Step 2a: patch the artifact's description (metadata: restarts nothing)"
before=$(kc get pods -n "$NS" -o name)
k patch artifact.kiln.dev my-app -n "$NS" --type merge -p '{"spec":{"description":"v2"}}'
wait_for artifact.kiln.dev/my-app '{.status.observedGeneration}' "$(kc get artifact.kiln.dev my-app -n "$NS" -o jsonpath='{.metadata.generation}')"
[ "$before" = "$(kc get pods -n "$NS" -o name)" ] && echo "same pods: nothing restarted"

say "Step 2b: replace the artifact (new image and probes: the workload restarts onto it)"
k replace -n "$NS" -f examples/02b-artifact-my-app.yaml
digest=$(kc get artifact.kiln.dev my-app -n "$NS" -o jsonpath='{.status.specDigest}')
until [ "$(kc get workload.kiln.dev my-app -n "$NS" -o jsonpath='{.status.artifact.specDigest}')" = "$digest" ]; do sleep 0.5; done
wait_for workload.kiln.dev/my-app '{.status.state}' Running
k get artifacts.kiln.dev -n "$NS" -o wide
pods
[ "$real" = 1 ] && predict my-app-dev v2

say "Step 2c: stop the workload, then start it again (with the kubectl plugin, kubectl kiln)"
kk stop workload my-app -n "$NS"
wait_for workload.kiln.dev/my-app '{.status.conditions[?(@.type=="Ready")].reason}' Stopped
pods 2>&1
if [ "$real" = 1 ]; then
  kc get service my-app-dev -n "$NS" >/dev/null 2>&1 && { echo "ERROR: the stopped workload still has a Service"; exit 1; }
  echo "nothing answers: no pods, no development Service"
fi
kk start workload my-app -n "$NS"
wait_for workload.kiln.dev/my-app '{.status.state}' Running
pods

say "Step 3: register the artifact: its spec is locked (version, image digest, who and when are recorded)"
kk register artifact my-app -n "$NS"
wait_for artifact.kiln.dev/my-app '{.status.lifecycle}' Registered
k get artifact.kiln.dev my-app -n "$NS" \
  -o custom-columns=NAME:.metadata.name,LIFECYCLE:.status.lifecycle,COLLECTION:.status.collection,VERSION:.status.version,BY:.status.registeredBy,AT:.status.registeredAt
k get artifact.kiln.dev my-app -n "$NS" -o jsonpath='{range .status.images[*]}{.container}: {.image} -> {.digest}{"\n"}{end}{"spec digest: "}{.status.specDigest}{"\n"}'
echo "\$ kubectl replace -f examples/03-artifact-my-app-v3.yaml   # must be rejected"
if kubectl --kubeconfig="$KUBECONFIG" replace -n "$NS" -f examples/03-artifact-my-app-v3.yaml; then
  echo "ERROR: a registered artifact was changed"; exit 1
fi
pods

say "Step 4: promote the workload to a governed Deployment (High importance: it waits for an approval)"
k apply -n "$NS" -f examples/04-deployment.yaml
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Approved")].reason}' AwaitingApproval
k get deployment.kiln.dev my-app -n "$NS" -o jsonpath='{.status.conditions[?(@.type=="Approved")].message}{"\n"}'
say "Step 4, governance: alice (kiln-approver) approves; the change rolls out"
k create rolebinding alice-approver -n "$NS" --clusterrole=kiln-approver --user=alice
kk approve deployment my-app -n "$NS" --as alice --comment "reviewed the scorer v2 metrics"
k get approvals -n "$NS"
k wait -n "$NS" --for=condition=Approved deployment.kiln.dev/my-app --timeout=60s
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Ready")].status}' True
k get deployments.kiln.dev,deployments.apps,services,poddisruptionbudgets -n "$NS"
kk history deployment my-app -n "$NS"
kk get my-app -n "$NS"
echo "Production runs the image by the digest its registration resolved (the tag may move; production does not):"
k get pods -n "$NS" -l kiln.dev/deployment=my-app -o custom-columns=POD:.metadata.name,IMAGE:.spec.containers[0].image
image=$(kc get pods -n "$NS" -l kiln.dev/deployment=my-app -o jsonpath='{.items[0].spec.containers[0].image}')
[[ "$image" == *@sha256:* ]] || { echo "ERROR: production runs $image, not a digest"; exit 1; }
[ "$real" = 1 ] && predict my-app v2

say "Step 5: the next version: a new Artifact of the collection my-app, registered (version 2); production switches to it"
k apply -n "$NS" -f examples/05-artifact-my-app-2.yaml
wait_for artifact.kiln.dev/my-app-2 '{.status.version}' 2
k get artifacts.kiln.dev -n "$NS" -l kiln.dev/collection=my-app
k patch deployment.kiln.dev my-app -n "$NS" --type merge -p '{"spec":{"artifactRef":{"name":null,"collection":"my-app","version":2}}}'
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Approved")].reason}' AwaitingApproval
kk approve deployment my-app -n "$NS" --as alice --comment "v3 beats v2 offline"
wait_for deployment.kiln.dev/my-app '{.status.artifact.version}' 2
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Ready")].status}' True
k get deployment.kiln.dev my-app -n "$NS"
[ "$real" = 1 ] && predict my-app v3

say "Step 6: roll back to the version before (the plugin patches spec.artifactRef; approved like any switch)"
kk rollback deployment my-app -n "$NS"
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Approved")].reason}' AwaitingApproval
kk approve deployment my-app -n "$NS" --as alice --comment "v3 misbehaves online: back to v2"
wait_for deployment.kiln.dev/my-app '{.status.artifact.version}' 1
wait_for deployment.kiln.dev/my-app '{.status.conditions[?(@.type=="Ready")].status}' True
k get deployment.kiln.dev my-app -n "$NS"
kk history deployment my-app -n "$NS"
k get replicasets -n "$NS" -l kiln.dev/deployment=my-app

say "Summary"
k get kiln -n "$NS"
echo
k get events -n "$NS" --field-selector involvedObject.apiVersion=kiln.dev/v1alpha1 \
  --sort-by=.lastTimestamp -o custom-columns=KIND:.involvedObject.kind,REASON:.reason,MESSAGE:.message
if [ "$real" = 1 ]; then
  say "Production: the model it was rolled back to answers through the governed Deployment's Service my-app"
  predict my-app v2
  kk call deployment my-app -n "$NS" --path /predict --data '{"features": [1, 2, 3]}'
fi
cat <<EOT

The cluster keeps running:  export KUBECONFIG=$KUBECONFIG
Call the model yourself:    curl -d '{"features": [1, 2, 3]}' http://\$(kubectl -n $NS get service my-app -o jsonpath='{.spec.clusterIP}'):8080/predict
Run the operator again:     .venv/bin/kiln run
Stop everything:            .venv/bin/kiln cluster down
EOT
