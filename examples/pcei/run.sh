#!/usr/bin/env bash
# run.sh - the PCEI end-to-end scenario (plans/pcei-lab.lua) on this machine:
# one orchestrator enables resources at a public cloud, an interconnection
# provider and an edge cloud provider, then deploys a MEC application.
#
#   examples/pcei/run.sh          (what scripts/demo runs after set-up)
#
# 1. starts every peer the machine can run (examples/pcei/lab.sh): s3rver
#    behind the SigV4 verifier, the fabric emulator, two netns sites with
#    sshd (edge, cloud gateway), podman's Docker API, and a loopback file
#    server publishing two builds of the Location API image; says which
#    parts are skipped and why (podman and namespaces need root)
# 2. mecorch init and apply; a GET of the application's URL, from this
#    machine and from the cloud gateway across the interconnect; the outputs
# 3. plan: nothing to do
# 4. one input changed (app_version 1 -> 2): the plan touches only what
#    depends on it (checked), and apply rolls the new build out
# 5. destroy, then every peer is checked empty; everything is torn down on
#    exit, also after a failure or ^C
#
# Exit status 0 when every check passed.  Environment: MECORCH (default
# build/mecorch), PCEI_SKIP="sites app public_cloud" (switch parts off),
# PCEI_KEEP=1 (keep the work directory: state, logs), MECORCH_DEMO_DIR (the
# work directory, then kept; default a new /tmp/mecorch-pcei.XXXXXX, then
# removed).  When not even the interconnect part can run, the basic demo
# (scripts/demo --basic) runs instead.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export MECORCH=${MECORCH:-$ROOT/build/mecorch}
PLAN=$ROOT/plans/pcei-lab.lua
# shellcheck source=lab.sh
. "$ROOT/examples/pcei/lab.sh"

if [ ! -x "$MECORCH" ]; then
	echo "run.sh: no mecorch at $MECORCH (scripts/build, or set MECORCH)" >&2
	exit 1
fi

if [ -n "${MECORCH_DEMO_DIR:-}" ]; then
	WORK=$MECORCH_DEMO_DIR
	export PCEI_KEEP=1 # a directory given is never removed
else
	WORK=$(mktemp -d /tmp/mecorch-pcei.XXXXXX)
fi
trap 'pcei_lab_down' EXIT
trap 'exit 130' INT TERM
export MECORCH_STATE=$WORK/mecorch.db XDG_CACHE_HOME=$WORK/cache NO_COLOR=1

PASS=0
FAIL=0
say() { printf '\n== %s\n' "$*"; }
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
check() { # check DESC COMMAND...
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
run() { # run ARGS...: show and run a mecorch command
	echo "\$ mecorch $*"
	"$MECORCH" "$@"
}

# ---- 1. the lab --------------------------------------------------------------

say "starting the lab's peers in $WORK"
if ! pcei_lab_up "$WORK"; then
	echo "run.sh: the PCEI lab cannot start here (above: why); running the basic demo instead"
	pcei_lab_down
	trap - EXIT
	MECORCH_DEMO_SKIP_SETUP=1 exec "$ROOT/scripts/demo" --basic
fi
pcei_report
[ "$PCEI_S3" = 1 ] && echo "  S3 API $PCEI_S3_ENDPOINT (SigV4 verifier) -> s3rver $PCEI_S3_DIRECT"
echo "  interconnection provider $PCEI_FABRIC_URL"
[ "$PCEI_SITES" = 1 ] && echo "  edge site $SITE1_ADDR ($SITE1_NS), cloud gateway $SITE2_ADDR ($SITE2_NS)"
[ "$PCEI_APP" = 1 ] && echo "  podman $PCEI_PODMAN_SOCK"
[ -n "${PCEI_WWW:-}" ] && echo "  builds of the application published on $PCEI_WWW"

V=(--var-file "$PCEI_DIR/lab.json" --lock-file "$WORK/mecorch.lock")
# The modules come from this project's own git repository, pinned to the
# checked-out commit, as a deployment repository would use them; from the
# working tree when it has uncommitted changes under iac-modules/ (or is not
# a git checkout), so local edits are what runs.
if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1 &&
	[ -z "$(git -C "$ROOT" status --porcelain -- iac-modules)" ]; then
	V+=(--var "modules=git+file://$ROOT//iac-modules?ref=$(git -C "$ROOT" rev-parse HEAD)")
	echo "modules: git+file://$ROOT//iac-modules at $(git -C "$ROOT" rev-parse --short HEAD)"
else
	echo "modules: the working tree's iac-modules/ (uncommitted changes, or not a git checkout)"
fi

# ---- 2. init, apply, the application ------------------------------------------

say "mecorch init (resolve and pin the module sources)"
run init "$PLAN" "${V[@]}" || bad "init"

say "mecorch apply: public cloud, interconnect, edge cloud, then the MEC application"
if run apply "$PLAN" "${V[@]}" --auto-approve; then ok "apply"; else bad "apply"; fi

say "the application"
URL=$("$MECORCH" output app_url --json 2>/dev/null | jq -r . 2>/dev/null)
if [ "$PCEI_APP" = 1 ]; then
	echo "\$ curl $URL/queries/zones"
	if curl -sf --max-time 10 "$URL/queries/zones" | tee "$WORK/zones.json" | head -c 400 &&
		jq -e '.zoneList.zone | length > 0' "$WORK/zones.json" >/dev/null; then
		echo
		ok "GET $URL/queries/zones answers the zone list"
	else
		bad "GET $URL/queries/zones"
	fi
	if [ "$PCEI_SITES" = 1 ]; then
		CLOUD_URL=$("$MECORCH" output app_url_from_cloud --json 2>/dev/null | jq -r .)
		echo "\$ ip netns exec $SITE2_NS curl $CLOUD_URL/queries/users?zoneId=zone01   # from the cloud gateway"
		if ip netns exec "$SITE2_NS" curl -sf --max-time 10 "$CLOUD_URL/queries/users?zoneId=zone01" |
			tee "$WORK/users.json" | head -c 300 &&
			jq -e '.userList.user | length > 0' "$WORK/users.json" >/dev/null; then
			echo
			ok "the cloud gateway reaches the application across the interconnect"
		else
			bad "the cloud gateway reaches the application across the interconnect"
		fi
	fi
else
	echo "(the application is skipped: $PCEI_APP_WHY)"
fi

say "mecorch output: what was created in each domain"
run output

say "mecorch plan (nothing to do after apply)"
run plan "$PLAN" "${V[@]}" --detailed-exitcode
rc=$?
if [ $rc -eq 0 ]; then ok "the second plan is empty"; else bad "the second plan is empty (exit $rc)"; fi

# ---- 4. one input changed -----------------------------------------------------------

if [ "$PCEI_S3" = 1 ]; then
	CHANGE=(--var app_version=2)
	WANT="module.cloud.object.app update"
	if [ "$PCEI_APP" = 1 ]; then
		WANT="$WANT
module.edge.container.pcei-location-api delete+create
module.edge.image.location-api create+delete"
	fi
	say "a new build of the application: app_version 1 -> 2"
else
	CHANGE=(--var bandwidth_mbps=1000)
	WANT="module.fabric.connection.edge-to-cloud update"
	say "a new bandwidth for the interconnect: bandwidth_mbps 500 -> 1000"
fi
"$MECORCH" plan "$PLAN" "${V[@]}" "${CHANGE[@]}" --json 2>/dev/null |
	jq -r 'select(.type == "plan") | .resource_changes[] | select(.change.actions != ["no-op"]) |
		"\(.address) \(.change.actions | join("+"))"' | LC_ALL=C sort >"$WORK/change.plan"
echo "what the plan changes:"
sed 's/^/  /' "$WORK/change.plan"
if [ "$(cat "$WORK/change.plan")" = "$(echo "$WANT" | LC_ALL=C sort)" ]; then
	ok "only what depends on the changed input is touched"
else
	bad "only what depends on the changed input is touched; expected:"
	echo "$WANT" | sed 's/^/  /'
fi
if run apply "$PLAN" "${V[@]}" "${CHANGE[@]}" --auto-approve; then ok "apply of the change"; else bad "apply of the change"; fi
if [ "$PCEI_APP" = 1 ]; then
	img=$(_pcei_dapi "http://d/v1.41/containers/pcei-location-api/json" | jq -r .Image)
	sha=$(_pcei_dapi "http://d/v1.41/images/$img/json" | jq -r '(.Config.Labels // .Labels // {})["mecorch.sha256"]')
	check "the container runs build 2 (image sha256 ${sha:0:12}...)" test "$sha" = "$PCEI_SHA2"
	check "the application answers after the roll-out" \
		bash -c "curl -sf --max-time 10 '$URL/queries/zones' | jq -e '.zoneList.zone | length > 0' >/dev/null"
fi
run plan "$PLAN" "${V[@]}" "${CHANGE[@]}" --detailed-exitcode >/dev/null
rc=$?
if [ $rc -eq 0 ]; then ok "plan is empty after the change"; else bad "plan is empty after the change (exit $rc)"; fi

# ---- 5. destroy -------------------------------------------------------------------------

say "mecorch destroy"
if run destroy "$PLAN" "${V[@]}" "${CHANGE[@]}" --auto-approve; then ok "destroy"; else bad "destroy"; fi
left=$(pcei_leftovers)
if [ -z "$left" ]; then
	ok "every peer is empty: no bucket, container, image, connection, VXLAN link or site file left"
else
	bad "peers still hold:"
	echo "$left" | sed 's/^/  /'
fi

say "summary"
pcei_report
echo "$PASS checks passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
