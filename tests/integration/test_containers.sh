#!/usr/bin/env bash
# test_containers.sh - iac-modules/edge-cloud/containers against a real
# podman (Docker-compatible API on a unix socket, examples/lab/podman.sh):
# the location-api image imported from a tarball served on loopback, two
# containers (one published on 127.0.0.1, with a health check and a restart
# policy); an empty plan after apply; drift (a container stopped, another
# removed behind mecorch's back); an in-place update (stop / start); a
# replace (env); an image replace; the podman service killed during an apply
# and recovery by the next one; destroy leaving podman without any of it.
#
# Skipped (exit 77, "skipped: <reason>"; ctest shows it as not run) only
# when podman cannot run a container on this machine: not installed, not
# root, or its service or a first container fails.  Every container, image
# and podman process it starts is removed on exit.
source "$(dirname "$0")/lib.sh"

PODMAN_SH=$MO_SOURCE_DIR/examples/lab/podman.sh
BUILD_IMAGE=$MO_SOURCE_DIR/examples/apps/location-api/build-image.sh
MODULE=$MO_SOURCE_DIR/iac-modules/edge-cloud/containers
PD=$T/podman
SOCK=$PD/podman.sock
LABEL=mecorch-it-$$
WWW_PID=

_edge_cleanup() {
	[ -n "$WWW_PID" ] && kill "$WWW_PID" 2>/dev/null
	[ -d "$PD" ] && "$PODMAN_SH" clean "$PD" >/dev/null 2>&1
	_it_cleanup
}
trap _edge_cleanup EXIT

# skip REASON: this machine cannot run the test at all; exit 77, which ctest
# reports as skipped, not passed (SKIP_RETURN_CODE in CMakeLists.txt).
skip() {
	echo "skipped: $*"
	echo
	echo "$PASSED passed, $FAILED failed, skipped"
	exit 77
}

# ---- can podman run a container here? ----------------------------------------

for tool in podman runc python3 gcc; do
	command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/install-edge-lab)"
done
[ -x /bin/busybox ] || skip "busybox-static is not installed (scripts/install-edge-lab)"
[ "$(id -u)" -eq 0 ] || skip "podman's lab setup needs root"

say "podman service on $SOCK"
if ! "$PODMAN_SH" start "$PD" >"$T/podman-start.log" 2>&1; then
	skip "the podman service does not start: $(tail -n 1 "$T/podman-start.log")"
fi
mkdir -p "$T/probe/bin"
cp /bin/busybox "$T/probe/bin/busybox"
ln -s busybox "$T/probe/bin/true"
tar -C "$T/probe" -cf "$T/probe.tar" .
if ! "$PODMAN_SH" podman "$PD" import -q "$T/probe.tar" localhost/edge-probe:1 >"$T/probe.log" 2>&1 ||
	! "$PODMAN_SH" podman "$PD" run --rm --network none localhost/edge-probe:1 /bin/true \
		>>"$T/probe.log" 2>&1; then
	skip "podman cannot run a container here: $(tail -n 1 "$T/probe.log")"
fi
"$PODMAN_SH" podman "$PD" rmi -f localhost/edge-probe:1 >/dev/null 2>&1

# ---- helpers ----------------------------------------------------------------------

dapi() { curl -sS --max-time 30 --unix-socket "$SOCK" -H 'Content-Type: application/json' "$@"; }

# "name id" of the labelled containers podman holds (all states), sorted.
podman_containers() {
	dapi -G "http://d/v1.41/containers/json" --data-urlencode all=true \
		--data-urlencode "filters={\"label\":[\"mecorch.test=$LABEL\"]}" |
		jq -r '.[] | "\(.Names[0] | ltrimstr("/")) \(.Id)"' | LC_ALL=C sort
}
# "name id" of the container resources in the state, sorted.
state_containers() {
	"$MECORCH" show --json </dev/null |
		jq -r 'select(.type == "container") | "\(.props.name) \(.id)"' | LC_ALL=C sort
}
# Ids of the images that carry the label.
podman_images() {
	dapi -G "http://d/v1.41/images/json" --data-urlencode all=true |
		jq -r --arg l "$LABEL" '.[] | select((.Labels // {})["mecorch.test"] == $l) | .Id' | LC_ALL=C sort
}
state_images() {
	"$MECORCH" show --json </dev/null | jq -r 'select(.type == "image") | .id' | LC_ALL=C sort
}
cid() { state_containers | awk -v n="$1" '$1 == n {print $2}'; }
cstate() { dapi "http://d/v1.41/containers/$1/json" | jq -r '.State.Status'; }
zones() { curl -s --max-time 5 "http://127.0.0.1:$PORT/location/v2/queries/zones"; }

check_peer_matches_state() {
	check_eq "$1: podman's containers == the state's" "$(state_containers)" "$(podman_containers)"
	check_eq "$1: podman's images == the state's" "$(state_images)" "$(podman_images)"
}

# check_said DESC TEXT: the last `mo` printed TEXT (stdout or stderr).  grep
# reads the files itself: `cat | grep -q` can fail under pipefail when grep
# stops reading early.
check_said() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

# ---- the image tarball, served on loopback ---------------------------------------------

say "build the location-api image tarball"
mkdir -p "$T/www"
check_true "build-image.sh builds the rootfs tarball" \
	bash -c "'$BUILD_IMAGE' -o '$T/www/location-api.tar' >'$T/build.log' 2>&1"
SHA1=$(sha256sum "$T/www/location-api.tar" | cut -d' ' -f1)
# A second version of the image: one more file.
mkdir -p "$T/v2"
tar -C "$T/v2" -xf "$T/www/location-api.tar"
echo v2 >"$T/v2/etc/location-api-version"
tar -C "$T/v2" -cf "$T/www/location-api-v2.tar" .
SHA2=$(sha256sum "$T/www/location-api-v2.tar" | cut -d' ' -f1)

python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$T/www" >"$T/www.log" 2>&1 &
WWW_PID=$!
IT_PIDS+=("$WWW_PID")
poll_until 60 grep -q 'port [0-9]' "$T/www.log"
WWW_PORT=$(grep -o 'port [0-9]*' "$T/www.log" | head -n 1 | awk '{print $2}')
[ -n "$WWW_PORT" ] || { echo "the tarball server did not start" >&2; exit 1; }
WWW=http://127.0.0.1:$WWW_PORT

# la-web's published port: podman binds it again at every re-create; below
# the ephemeral range no outgoing connection can take it in between.
PORT=$(it_free_port)
cat >"$T/plan.lua" <<EOF
local socket = variable("socket", { type = "string" })
local source = variable("source", { type = "string" })
local sha = variable("sha", { type = "string" })
local port = variable("port", { type = "integer" })
local label = variable("label", { type = "string" })
local root = variable("root", { type = "string", default = "" })
local running = variable("running", { type = "boolean", default = true })
local start_period = variable("start_period", { type = "number", default = 0 })
local side_rev = variable("side_rev", { type = "string", default = "1" })

module("edge", {
  source = "$MODULE",
  inputs = {
    socket = socket,
    labels = { ["mecorch.test"] = label },
    images = {
      ["location-api"] = {
        ref = "localhost/location-api:it", source = source, sha256 = sha,
        changes = { 'CMD ["/usr/local/bin/location-api"]', "EXPOSE 8081" },
      },
    },
    containers = {
      ["la-web"] = {
        image = "location-api",
        env = { LOCATION_API_ROOT = root },
        ports = { ["8081"] = port },
        health = { test = "wget -q -O /dev/null http://127.0.0.1:8081/location/v2/queries/zones",
                   interval_s = 1, timeout_s = 2, retries = 3, start_period_s = start_period },
        restart = "unless-stopped",
        running = running,
        wait_healthy_s = 120,
      },
      ["la-side"] = {
        image = "location-api",
        cmd = { "/usr/local/bin/location-api", "--listen", "127.0.0.1:9000" },
        labels = { role = "side", rev = side_rev },
      },
    },
  },
})
EOF

V=(--var "socket=$SOCK" --var "source=$WWW/location-api.tar" --var "sha=$SHA1"
	--var "port=$PORT" --var "label=$LABEL")

# ---- create -----------------------------------------------------------------------

say "apply: import the image, create and start two containers"
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "3 created" "3 created, 0 updated"
check_eq "podman runs la-web" running "$(cstate la-web)"
check_eq "podman runs la-side" running "$(cstate la-side)"
check_eq "la-web is healthy" healthy "$(dapi http://d/v1.41/containers/la-web/json | jq -r .State.Health.Status)"
check_true "the Location API answers through the 127.0.0.1 port binding" \
	bash -c "curl -sf --max-time 5 http://127.0.0.1:$PORT/location/v2/queries/zones | jq -e '.zoneList.zone | length == 3' >/dev/null"
check_true "GET /queries/users?zoneId=zone01 lists zone01's users" \
	bash -c "curl -sf --max-time 5 'http://127.0.0.1:$PORT/location/v2/queries/users?zoneId=zone01' | jq -e '[.userList.user[].zoneId] | unique == [\"zone01\"]' >/dev/null"
check_eq "la-web's port binding is on 127.0.0.1 only" '127.0.0.1' \
	"$(dapi http://d/v1.41/containers/la-web/json | jq -r '.HostConfig.PortBindings["8081/tcp"][0].HostIp')"
check_eq "la-side has no network" none "$(dapi http://d/v1.41/containers/la-side/json | jq -r .HostConfig.NetworkMode)"
check_eq "la-web's restart policy" unless-stopped \
	"$(dapi http://d/v1.41/containers/la-web/json | jq -r .HostConfig.RestartPolicy.Name)"
check_peer_matches_state "after create"

say "plan right after apply is empty"
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan --detailed-exitcode exits 0" 0

# ---- drift ------------------------------------------------------------------------

say "drift: la-web stopped behind mecorch's back"
WEB=$(cid la-web)
dapi -X POST "http://d/v1.41/containers/la-web/stop?t=5" >/dev/null
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan sees the change (exit 2)" 2
check_said "plan shows running false -> true" "running = false -> true"
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "1 updated" "0 created, 1 updated, 0 replaced"
check_eq "la-web runs again" running "$(cstate la-web)"
check_eq "la-web is the same container" "$WEB" "$(cid la-web)"
check_true "the Location API answers again" bash -c "curl -sf --max-time 5 http://127.0.0.1:$PORT/location/v2/queries/zones >/dev/null"

say "drift: la-side removed behind mecorch's back"
SIDE=$(cid la-side)
dapi -X DELETE "http://d/v1.41/containers/la-side?force=true" >/dev/null
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan sees the change (exit 2)" 2
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "1 created" "1 created, 0 updated"
check_true "la-side is a new container" test "$SIDE" != "$(cid la-side)"
check_eq "podman runs the new la-side" running "$(cstate la-side)"
check_peer_matches_state "after the drift"

# ---- update and replace ------------------------------------------------------------

say "update in place: running = false, then true"
mo apply "$T/plan.lua" "${V[@]}" --var running=false --auto-approve
check_rc "apply exits 0" 0
check_said "1 updated" "0 created, 1 updated, 0 replaced"
check_eq "la-web is stopped" exited "$(cstate la-web)"
check_eq "la-web is the same container" "$WEB" "$(cid la-web)"
mo plan "$T/plan.lua" "${V[@]}" --var running=false --detailed-exitcode
check_rc "plan with running=false is empty" 0
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_said "running again: 1 updated" "0 created, 1 updated, 0 replaced"
check_eq "la-web runs" running "$(cstate la-web)"

say "replace: a new environment recreates la-web"
V+=(--var "root=http://edge.example:8081")
mo apply "$T/plan.lua" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "1 replaced" "0 created, 0 updated, 1 replaced"
check_true "la-web is a new container" test "$WEB" != "$(cid la-web)"
check_eq "the new la-web serves resourceURLs under the new root" \
	"http://edge.example:8081/location/v2/queries/zones" "$(zones | jq -r .zoneList.resourceURL)"
mo plan "$T/plan.lua" "${V[@]}" --detailed-exitcode
check_rc "plan after the replace is empty" 0
check_peer_matches_state "after the replace"

say "replace the image: a new tarball replaces the image and both containers"
OLD_IMAGE=$(state_images)
V2=("${V[@]}" --var "source=$WWW/location-api-v2.tar" --var "sha=$SHA2")
mo apply "$T/plan.lua" "${V2[@]}" --auto-approve
check_rc "apply exits 0" 0
check_said "3 replaced" "0 created, 0 updated, 3 replaced"
check_true "a new image" test "$OLD_IMAGE" != "$(state_images)"
check_eq "the old image is gone from podman" 404 \
	"$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" "http://d/v1.41/images/$OLD_IMAGE/json")"
check_eq "la-web runs the new image" "$(state_images)" "$(dapi http://d/v1.41/containers/la-web/json | jq -r .Image)"
check_true "the Location API answers" bash -c "curl -sf --max-time 5 http://127.0.0.1:$PORT/location/v2/queries/zones >/dev/null"
mo plan "$T/plan.lua" "${V2[@]}" --detailed-exitcode
check_rc "plan after the image replace is empty" 0
check_peer_matches_state "after the image replace"

# ---- the podman service killed during an apply -----------------------------------------

say "fault: the podman service is killed while la-web is being replaced"
# Two replaces: la-side's (a new label: quick) and la-web's (a new health
# check start period, 10 s, during which the module does not run the check,
# so its create waits at least that long).  The service is killed once
# la-side's replace is done and the new la-web runs, still waiting: one of
# the two changes made, the other under way.
V3=("${V2[@]}" --var start_period=10 --var side_rev=2)
# podman's la-web is the new one (start period 10 s, in ns), running and not
# yet healthy.
new_web_runs() {
	[ "$(dapi http://d/v1.41/containers/la-web/json 2>/dev/null |
		jq -r 'select(.State.Health.Status != "healthy") |
			"\(.State.Status) \(.Config.Healthcheck.StartPeriod)"' 2>/dev/null)" = "running 10000000000" ]
}
side_replaced() { grep -q "container.la-side: replace done" "$T/fault.log"; }
mid_replace() { side_replaced && new_web_runs; }
mo_bg "$T/fault.log" apply "$T/plan.lua" "${V3[@]}" --auto-approve
if poll_until 120 mid_replace; then SEEN=yes; else SEEN=no; fi
APPLYING=no
kill -0 "$BG_PID" 2>/dev/null && APPLYING=yes
kill -KILL "$(cat "$PD/podman.pid")"
mo_wait "$BG_PID"
check_eq "before the kill: la-side replaced and the new la-web running, not yet healthy" yes "$SEEN"
check_eq "the apply was still running when the service was killed" yes "$APPLYING"
check_true "the apply fails while the service is gone (exit $BG_RC)" test "$BG_RC" != 0
check_true "not every change was made: la-web's replace never finished" \
	bash -c "! grep -q 'container.la-web: replace done' '$T/fault.log'"
"$PODMAN_SH" start "$PD" >/dev/null
check_eq "one change was made: podman's la-side is the new one (rev 2)" 2 \
	"$(dapi http://d/v1.41/containers/la-side/json | jq -r '.Config.Labels.rev')"
mo apply "$T/plan.lua" "${V3[@]}" --auto-approve
check_rc "the next apply recovers (exit 0)" 0
mo plan "$T/plan.lua" "${V3[@]}" --detailed-exitcode
check_rc "plan after the recovery is empty" 0
check_eq "la-web runs" running "$(cstate la-web)"
check_eq "exactly one la-web and one la-side" "la-side la-web" \
	"$(podman_containers | awk '{print $1}' | tr '\n' ' ' | sed 's/ $//')"
check_eq "exactly one image" 1 "$(podman_images | grep -c .)"
check_eq "both carry the new settings" "10000000000 2" \
	"$(dapi http://d/v1.41/containers/la-web/json | jq -r .Config.Healthcheck.StartPeriod) $(dapi http://d/v1.41/containers/la-side/json | jq -r .Config.Labels.rev)"
check_peer_matches_state "after the recovery"
check_true "the Location API answers" bash -c "curl -sf --max-time 5 http://127.0.0.1:$PORT/location/v2/queries/zones >/dev/null"

# ---- destroy ----------------------------------------------------------------------

say "destroy"
mo destroy "$T/plan.lua" "${V3[@]}" --auto-approve
check_rc "destroy exits 0" 0
check_eq "podman has no container with the test label" "" "$(podman_containers)"
check_eq "podman has no image with the test label" "" "$(podman_images)"
check_eq "the state is empty" "" "$("$MECORCH" state list </dev/null)"
port_closed() { ! curl -s --max-time 2 "http://127.0.0.1:$PORT/" >/dev/null; }
poll_until 30 port_closed
check_true "nothing listens on the published port any more" port_closed

finish
