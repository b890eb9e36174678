#!/usr/bin/env bash
# test_kubernetes.sh - iac-modules/edge-cloud/kubernetes against the lab's
# Kubernetes API emulator (examples/lab/k8s.c): a namespace, two ConfigMaps,
# a Service and a Deployment waited on until rolled out; an empty plan after
# apply; drift (a ConfigMap changed and a Deployment deleted behind
# mecorch's back); an update (replicas and image: PUT with the current
# resourceVersion, generation 2); a replace (the immutable selector); bearer
# tokens (401, 403 read-only); a rollout that fails; the API server killed
# during an apply and recovery by the next one; destroy leaving the cluster
# empty.
source "$(dirname "$0")/lib.sh"

K8S=${K8S:-$(dirname "$MECORCH")/k8s}
MODULE=$MO_SOURCE_DIR/iac-modules/edge-cloud/kubernetes
TOKEN=it-token-$$
if [ ! -x "$K8S" ]; then
	echo "missing binary $K8S (build the k8s target, or set K8S)" >&2
	exit 1
fi

K8S_PID=
K8S_PORT=
# k8s_start [PORT]: the emulator on 127.0.0.1 (a free port, or PORT), with
# its objects kept in $T/k8s-state.json across restarts.  The free port is
# one below the ephemeral range (it_free_port; another one if the emulator
# could not bind it), so that no outgoing connection takes it while the
# emulator is down between a kill and its restart on it.
k8s_start() {
	emu_start k8s "${1:-}" "$T/k8s.log" "$K8S" --token "$TOKEN" --readonly-token ro-$$ \
		--rollout-delay-ms 300 --terminating-ms 300 --state-file "$T/k8s-state.json"
	K8S_PID=$EMU_PID
	K8S_PORT=$EMU_PORT
	K8S_URL=http://127.0.0.1:$K8S_PORT
}

kc() { curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
kget() { kc "$K8S_URL$1"; }
kstat() { kc "$K8S_URL/_stats" | jq -r "$1"; }
DEP=/apis/apps/v1/namespaces/edge-it/deployments/location-api
CM=/api/v1/namespaces/edge-it/configmaps/location-config

# "kind ns/name uid" of what the emulator holds (namespaces edge-it and
# default), sorted; and the same of the state.
peer_objects() {
	{
	kget /api/v1/namespaces | jq -r '.items[] | select(.metadata.name != "default" and
		.metadata.name != "kube-system") | "namespace \(.metadata.name) \(.metadata.uid)"'
	for ns in edge-it default; do
		kget "/api/v1/namespaces/$ns/configmaps" | jq -r '.items[] | "configmap \(.metadata.namespace)/\(.metadata.name) \(.metadata.uid)"'
		kget "/api/v1/namespaces/$ns/services" | jq -r '.items[] | "service \(.metadata.namespace)/\(.metadata.name) \(.metadata.uid)"'
		kget "/apis/apps/v1/namespaces/$ns/deployments" | jq -r '.items[] | "deployment \(.metadata.namespace)/\(.metadata.name) \(.metadata.uid)"'
	done
	} | LC_ALL=C sort
}
state_objects() {
	"$MECORCH" show --json </dev/null | jq -r 'select(.type != null) |
		if .type == "namespace" then "namespace \(.props.name) \(.id)"
		else "\(.type) \(.props.namespace)/\(.props.name) \(.id)" end' | LC_ALL=C sort
}
check_peer_matches_state() {
	check_eq "$1: the cluster's objects == the state's" "$(state_objects)" "$(peer_objects)"
}

# check_said DESC TEXT: the last `mo` printed TEXT (grep reads the files
# itself: `cat | grep -q` can fail under pipefail when grep stops early).
check_said() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

k8s_start
cat >"$T/plan.lua" <<EOF
local endpoint = variable("endpoint", { type = "string" })
local token = variable("token", { type = "string", sensitive = true })
local replicas = variable("replicas", { type = "integer", default = 2 })
local image = variable("image", { type = "string", default = "localhost/location-api:1" })
local greeting = variable("greeting", { type = "string", default = "hello" })
local tier = variable("tier", { type = "string", default = "v1" })
local fail = variable("fail", { type = "string", default = "false" })

module("cluster", {
  source = "$MODULE",
  inputs = {
    endpoint = endpoint,
    token = token,
    labels = { ["app.kubernetes.io/managed-by"] = "mecorch" },
    namespaces = { ["edge-it"] = { labels = { tier = "edge" } } },
    configmaps = {
      ["edge-it/location-config"] = { data = { greeting = greeting, zones = "zone01,zone02" } },
      ["plain-config"] = { data = { mode = "lab" } },
    },
    deployments = {
      ["edge-it/location-api"] = {
        image = image, replicas = replicas, port = 8081, selector = { tier = tier },
        env = { LOCATION_API_ROOT = "http://location-api.edge-it" },
        annotations = { ["lab.mecorch.io/rollout-fail"] = fail },
        timeout_s = 120,
      },
    },
    services = {
      ["edge-it/location-api"] = {
        spec = { selector = { app = "location-api" }, ports = { { port = 80, targetPort = 8081 } } },
      },
    },
  },
})
EOF
V=(--var "endpoint=$K8S_URL" --var "token=$TOKEN")

# ---- create -----------------------------------------------------------------------

say "apply: a namespace, two ConfigMaps, a Service, a Deployment"
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "5 created" "5 created, 0 updated"
check_eq "the Deployment is rolled out: 2 available" 2 "$(kget $DEP | jq -r .status.availableReplicas)"
check_eq "its Available condition is True" True \
	"$(kget $DEP | jq -r '.status.conditions[] | select(.type == "Available") | .status')"
check_eq "the ConfigMap holds the data" '{"greeting":"hello","zones":"zone01,zone02"}' \
	"$(kget $CM | jq -c .data)"
check_eq "plain-config went to the default namespace" lab \
	"$(kget /api/v1/namespaces/default/configmaps/plain-config | jq -r .data.mode)"
check_true "the Service got a clusterIP" \
	bash -c "curl -s -H 'Authorization: Bearer $TOKEN' $K8S_URL/api/v1/namespaces/edge-it/services/location-api | jq -e '.spec.clusterIP | startswith(\"10.96.\")' >/dev/null"
check_eq "common labels are set" mecorch \
	"$(kget $CM | jq -r '.metadata.labels["app.kubernetes.io/managed-by"]')"
check_peer_matches_state "after create"

say "plan right after apply is empty"
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan --detailed-exitcode exits 0 (server defaults are not drift)" 0

# ---- drift ------------------------------------------------------------------------

say "drift: the ConfigMap changed with curl; an unmanaged label added"
CM_UID=$(kget $CM | jq -r .metadata.uid)
kget $CM | jq '.data.greeting = "tampered" | .metadata.labels.owner = "ops"' |
	kc -X PUT "$K8S_URL$CM" -d @- >/dev/null
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan sees the change (exit 2)" 2
check_said "plan shows the data change" 'data.greeting = "tampered" -> "hello"'
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "1 updated" "0 created, 1 updated, 0 replaced"
check_eq "the data is back" hello "$(kget $CM | jq -r .data.greeting)"
check_eq "the same ConfigMap (uid)" "$CM_UID" "$(kget $CM | jq -r .metadata.uid)"
check_eq "the label mecorch does not manage is kept" ops "$(kget $CM | jq -r .metadata.labels.owner)"

say "drift: the Deployment deleted with curl"
kc -X DELETE "$K8S_URL$DEP" >/dev/null
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan sees the change (exit 2)" 2
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "1 created" "1 created, 0 updated"
check_eq "the Deployment is back and rolled out" 2 "$(kget $DEP | jq -r .status.availableReplicas)"
check_peer_matches_state "after the drift"

# ---- update and replace ------------------------------------------------------------

say "update: 3 replicas of a new image"
DEP_UID=$(kget $DEP | jq -r .metadata.uid)
mo apply "$T/plan.lua" "${V[@]}" --var replicas=3 --var image=localhost/location-api:2 --auto-approve
check_rc "apply exits 0" 0
check_said "1 updated" "0 created, 1 updated, 0 replaced"
check_eq "the same Deployment (uid)" "$DEP_UID" "$(kget $DEP | jq -r .metadata.uid)"
check_eq "generation 2, rolled out: 3 available of the new image" \
	"2 2 3 localhost/location-api:2" \
	"$(kget $DEP | jq -r '"\(.metadata.generation) \(.status.observedGeneration) \(.status.availableReplicas) \(.spec.template.spec.containers[0].image)"')"
check_eq "the revision annotation the server keeps" 2 \
	"$(kget $DEP | jq -r '.metadata.annotations["deployment.kubernetes.io/revision"]')"
V+=(--var replicas=3 --var image=localhost/location-api:2)
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan after the update is empty" 0

say "replace: a new selector (immutable) replaces the Deployment"
mo plan "$T/plan.lua" "${V[@]}" --var tier=v2
check_said "plan says replace" "must be replaced"
mo apply "$T/plan.lua" "${V[@]}" --var tier=v2 --auto-approve
check_rc "apply exits 0" 0
check_said "1 replaced" "0 created, 0 updated, 1 replaced"
check_true "a new Deployment (uid)" test "$DEP_UID" != "$(kget $DEP | jq -r .metadata.uid)"
check_eq "with the new selector, rolled out" "v2 3" \
	"$(kget $DEP | jq -r '"\(.spec.selector.matchLabels.tier) \(.status.availableReplicas)"')"
V+=(--var tier=v2)
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan after the replace is empty" 0
check_peer_matches_state "after the replace"

# ---- tokens and a failed rollout ----------------------------------------------------

say "tokens: a wrong one is refused (401), a read-only one cannot write (403)"
mo plan "$T/plan.lua" --var "endpoint=$K8S_URL" --var token=wrong
check_true "plan with a wrong token fails (exit $RC)" test "$RC" -ne 0
check_said "the error says 401" "401 Unauthorized"
mo apply "$T/plan.lua" "${V[@]}" --var token=ro-$$ --var greeting=ro --auto-approve
check_true "apply with the read-only token fails (exit $RC)" test "$RC" -ne 0
check_said "the error says 403" "forbids PUT"
check_eq "nothing changed" hello "$(kget $CM | jq -r .data.greeting)"

say "a rollout that cannot progress fails the apply"
mo apply "$T/plan.lua" "${V[@]}" --var fail=true --auto-approve
check_true "apply fails (exit $RC)" test "$RC" -ne 0
check_said "the error names the failed rollout" "failed to roll out"
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "the next apply without the fault rolls out (exit 0)" 0
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan is empty again" 0

# ---- the API server killed during an apply ------------------------------------------

say "fault: the API server is killed during a rollout, restarted, apply again"
# Two updates: the ConfigMap's (done at once) and the Deployment's (a PUT,
# then a wait for the rollout, which the emulator stretches to 10 s).  The
# server is killed once the ConfigMap's update is done and the Deployment's
# PUT has landed: one change made, the other under way.
kc -X PUT "$K8S_URL/_config" -d '{"rollout_delay_ms":10000}' >/dev/null
cm_updated() { grep -q "configmap.edge-it/location-config: update done" "$T/fault.log"; }
dep_put() { [ "$(kget $DEP | jq -r .spec.replicas 2>/dev/null)" = 4 ]; }
mid_rollout() { cm_updated && dep_put; }
mo_bg "$T/fault.log" apply "$T/plan.lua" "${V[@]}" --var replicas=4 --var greeting=bonjour --auto-approve
if poll_until 120 mid_rollout; then SEEN=yes; else SEEN=no; fi
ROLLED=$(kget $DEP | jq -r '.status.availableReplicas')
APPLYING=no
kill -0 "$BG_PID" 2>/dev/null && APPLYING=yes
kill -KILL "$K8S_PID"
wait "$K8S_PID" 2>/dev/null
mo_wait "$BG_PID"
check_eq "before the kill: the ConfigMap updated and the Deployment's PUT made" yes "$SEEN"
check_eq "the apply was still running when the server was killed" yes "$APPLYING"
check_true "the rollout was not finished then ($ROLLED of 4 replicas available)" test "$ROLLED" != 4
check_true "the apply fails while the API server is gone (exit $BG_RC)" test "$BG_RC" != 0
check_true "not every change was made: the Deployment's update never finished" \
	bash -c "! grep -q 'deployment.edge-it/location-api: update done' '$T/fault.log'"
k8s_start "$K8S_PORT"
mo apply "$T/plan.lua" "${V[@]}" --var replicas=4 --var greeting=bonjour --auto-approve
check_rc "the next apply recovers (exit 0)" 0
mo plan "$T/plan.lua" "${V[@]}" --var replicas=4 --var greeting=bonjour --detailed-exitcode
check_rc "plan after the recovery is empty" 0
check_eq "the Deployment is rolled out with 4 replicas" 4 "$(kget $DEP | jq -r .status.availableReplicas)"
check_eq "the ConfigMap has the new data" bonjour "$(kget $CM | jq -r .data.greeting)"
check_peer_matches_state "after the recovery"
check_eq "exactly the five objects, each once" \
	"configmap default/plain-config
configmap edge-it/location-config
deployment edge-it/location-api
namespace edge-it
service edge-it/location-api" "$(peer_objects | awk '{print $1, $2}')"

# ---- destroy ----------------------------------------------------------------------

say "destroy"
mo destroy "$T/plan.lua" "${V[@]}" --var replicas=4 --var greeting=bonjour --auto-approve
check_rc "destroy exits 0" 0
check_eq "the emulator holds no object" 0 "$(kstat .total_objects)"
check_eq "no namespace is left terminating" 0 "$(kstat .terminating)"
check_eq "the state is empty" "" "$("$MECORCH" state list </dev/null)"

finish
