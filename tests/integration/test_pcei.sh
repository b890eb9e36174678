#!/usr/bin/env bash
# test_pcei.sh - the PCEI end-to-end scenario, plans/pcei-lab.lua, on the lab
# of examples/pcei/lab.sh: s3rver behind the SigV4 verifier, the fabric
# emulator, two netns sites with sshd (edge, cloud gateway), podman's Docker
# API, a loopback file server with two builds of the Location API image.
#
# Checks: apply creates every domain's resources; the application's URL
# answers GET /location/v2/queries/zones with the zone list as JSON, also from
# the cloud gateway across the overlay; the artefact in the bucket is the
# build, byte for byte; every domain's outputs are there; a second plan is
# empty; one input changed touches only what depends on it (plan --json,
# counted per action), and on the peers nothing else moved; destroy leaves
# s3rver without a bucket, podman without a container or image of the lab,
# the provider without a connection, the sites without a VXLAN link or file.
# Then examples/pcei/run.sh (what scripts/demo runs) must pass on its own,
# and once more with parts switched off, saying which and why.
#
# Parts this machine cannot run (podman and namespaces need root; node for
# s3rver) are switched off, as the demo does: the checks of the parts that
# ran decide the result, and the parts skipped are listed with the reason,
# at the start and again just above the final count.  The provider's part
# always runs; when nothing beyond it could run, the test exits 77 (ctest:
# not run, skipped) once its checks have passed.
. "$(dirname "$0")/lib.sh"

export MECORCH
# shellcheck source=../../examples/pcei/lab.sh
. "$MO_SOURCE_DIR/examples/pcei/lab.sh"
PLAN=$MO_SOURCE_DIR/plans/pcei-lab.lua
# Not under $T: the sites' lab user must reach its files (mktemp -d is 0700).
LABDIR=$(mktemp -d /tmp/mecorch-pcei-it.XXXXXX)

_pcei_it_cleanup() {
	if [ "$FAILED" -gt 0 ]; then
		PCEI_KEEP=1 pcei_lab_down
		echo "(kept the lab's directory $LABDIR)"
	else
		pcei_lab_down
		rm -rf "$LABDIR"
	fi
	_it_cleanup
}
trap _pcei_it_cleanup EXIT

# check_has DESC TEXT: the last `mo`'s output contains TEXT.  grep reads the
# files itself (no pipe an early match could break under pipefail).
check_has() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

# The non-no-op changes of a plan --json as "address action+action", sorted.
plan_changes() {
	"$MECORCH" plan "$PLAN" "${V[@]}" "$@" --json </dev/null 2>/dev/null |
		jq -r 'select(.type == "plan") | .resource_changes[] | select(.change.actions != ["no-op"]) |
			"\(.address) \(.change.actions | join("+"))"' | LC_ALL=C sort
}
out_value() { # out_value JQ: a value of `mecorch output --json`
	"$MECORCH" output --json </dev/null 2>/dev/null | jq -r "$1"
}
conn_json() {
	curl -sS --max-time 10 -H "Authorization: Bearer $PCEI_FABRIC_TOKEN" "$PCEI_FABRIC_URL/v1/connections" |
		jq -c '.items[0] // empty'
}
ifindex() { # ifindex NS: the overlay link's ifindex in a site
	ip -n "$1" -j link show pcei4210 2>/dev/null | jq -r '.[0].ifindex // empty'
}
quiet() { "$@" >/dev/null 2>&1; }

# ---- the lab ----------------------------------------------------------------------

say "the lab's peers"
if ! pcei_lab_up "$LABDIR" >"$T/lab-up.log" 2>&1; then
	cat "$T/lab-up.log"
	_fail "the lab comes up (at least the interconnection provider)"
	finish
fi
pcei_report
# The parts switched off, one "  part: why" a line (nothing when all run).
skipped_parts() {
	[ "$PCEI_S3" = 1 ] || echo "  public cloud (S3, the artefact): $PCEI_S3_WHY"
	[ "$PCEI_SITES" = 1 ] || echo "  sites and overlay (netns, SSH): $PCEI_SITES_WHY"
	[ "$PCEI_APP" = 1 ] || echo "  edge cloud and MEC app (podman): $PCEI_APP_WHY"
}
SKIPPED=$(skipped_parts)
if [ -n "$SKIPPED" ]; then
	echo "skipped parts (their checks do not run):"
	echo "$SKIPPED"
fi
V=(--var-file "$PCEI_DIR/lab.json")
# Resources and module instances of the parts that run.
WANT_CREATES=1 WANT_MODULES=1
[ "$PCEI_S3" = 1 ] && WANT_CREATES=$((WANT_CREATES + 2)) WANT_MODULES=$((WANT_MODULES + 1))
[ "$PCEI_SITES" = 1 ] && WANT_CREATES=$((WANT_CREATES + 4)) WANT_MODULES=$((WANT_MODULES + 3))
[ "$PCEI_APP" = 1 ] && WANT_CREATES=$((WANT_CREATES + 2)) WANT_MODULES=$((WANT_MODULES + 1))

# ---- apply ------------------------------------------------------------------------

say "init and apply"
mo init "$PLAN" "${V[@]}"
check_rc "init succeeds" 0
check_has "init resolves the $WANT_MODULES modules" "$WANT_MODULES module(s) resolved"
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply succeeds" 0
check_has "apply creates every domain's resources ($WANT_CREATES)" \
	"$WANT_CREATES created, 0 updated, 0 replaced, 0 destroyed, 0 failed"

CONN=$(conn_json)
check_eq "the provider holds one PROVISIONED connection, port-1 <-> port-2 on VLAN 310, 500 Mb/s" \
	"PROVISIONED port-1/310 port-2/310 500" \
	"$(echo "$CONN" | jq -r '"\(.state) \(.a_side.port_id)/\(.a_side.vlan) \(.z_side.port_id)/\(.z_side.vlan) \(.bandwidth_mbps)"')"
CONN_ID=$(echo "$CONN" | jq -r .id)
CONN_VERSION=$(echo "$CONN" | jq -r .version)

if [ "$PCEI_S3" = 1 ]; then
	check_eq "s3rver holds the bucket" "pcei-artefacts" "$(pcei_s3_buckets)"
	check_eq "s3rver holds the artefact" "pcei-artefacts/location-api/rootfs.tar" "$(pcei_s3_objects)"
	check_eq "the artefact is build 1, byte for byte" "$PCEI_SHA1" \
		"$(curl -sS --max-time 10 "$PCEI_S3_DIRECT/pcei-artefacts/location-api/rootfs.tar" | sha256sum | cut -d' ' -f1)"
	check_eq "its metadata records the SHA-256" "$PCEI_SHA1" \
		"$(curl -sS -I --max-time 10 "$PCEI_S3_DIRECT/pcei-artefacts/location-api/rootfs.tar" |
			tr -d '\r' | sed -n 's/^x-amz-meta-mecorch-sha256: //Ip')"
	check_eq "the verifier rejected nothing mecorch sent" 0 \
		"$(curl -sS --max-time 10 "$PCEI_S3_ENDPOINT/_verifier/stats" | jq -r .rejected)"
fi

if [ "$PCEI_SITES" = 1 ]; then
	check_true "the edge site's attachment file" \
		grep -qx 'role=edge' "$SITE1_ROOT/pcei/attachment.conf"
	check_true "the cloud gateway's attachment file names the provider's port" \
		grep -qx 'provider_port=port-2' "$SITE2_ROOT/pcei/attachment.conf"
	check_true "VXLAN 4210 on the edge site, remote the cloud gateway" bash -c \
		"ip -n $SITE1_NS -d link show pcei4210 | grep -q 'vxlan id 4210 remote $SITE2_ADDR local $SITE1_ADDR'"
	check_true "the overlay carries traffic: cloud gateway -> edge" \
		quiet ip netns exec "$SITE2_NS" ping -c 1 -w 30 10.250.210.1
	IFX_EDGE=$(ifindex "$SITE1_NS")
	IFX_CGW=$(ifindex "$SITE2_NS")
	FILE_MTIME=$(stat -c %Y.%i "$SITE1_ROOT/pcei/attachment.conf")
fi

# ---- the application --------------------------------------------------------------

if [ "$PCEI_APP" = 1 ]; then
	say "the MEC application"
	APP_URL=$("$MECORCH" output app_url --json </dev/null | jq -r .)
	curl -sS --max-time 10 -D "$T/zones.hdr" -o "$T/zones.json" "$APP_URL/queries/zones"
	check_eq "GET $APP_URL/queries/zones answers 200" 200 \
		"$(awk 'NR == 1 {print $2}' "$T/zones.hdr")"
	check_true "as JSON" grep -qi '^content-type: application/json' "$T/zones.hdr"
	check_eq "the zone list (MEC 013)" "zone01 zone02 zone03" \
		"$(jq -r '[.zoneList.zone[].zoneId] | join(" ")' "$T/zones.json" 2>/dev/null)"
	check_eq "the container runs, healthy, labelled with the lab" "running healthy" \
		"$(_pcei_dapi http://d/v1.41/containers/pcei-location-api/json |
			jq -r --arg l "$PCEI_LAB_ID" 'select(.Config.Labels["pcei.lab"] == $l) | "\(.State.Status) \(.State.Health.Status)"')"
	CONTAINER_ID=$(_pcei_dapi http://d/v1.41/containers/pcei-location-api/json | jq -r .Id)
	if [ "$PCEI_SITES" = 1 ]; then
		check_eq "it lives in the edge site's namespace" "ns:/run/netns/$SITE1_NS" \
			"$(_pcei_dapi http://d/v1.41/containers/pcei-location-api/json | jq -r .HostConfig.NetworkMode)"
		FROM_CLOUD=$("$MECORCH" output app_url_from_cloud --json </dev/null | jq -r .)
		check_eq "the cloud gateway reaches it across the interconnect ($FROM_CLOUD)" "zone01" \
			"$(ip netns exec "$SITE2_NS" curl -sS --max-time 10 "$FROM_CLOUD/queries/users?zoneId=zone01" |
				jq -r '[.userList.user[].zoneId] | unique | join(" ")' 2>/dev/null)"
	fi
fi

# ---- outputs ------------------------------------------------------------------------

say "outputs: what was created in each domain"
mo output
check_rc "output" 0
check_eq "interconnect: the provider's connection" "$CONN_ID" "$(out_value .interconnect.value.provider_connection)"
if [ "$PCEI_S3" = 1 ]; then
	check_eq "public cloud: the bucket" "arn:aws:s3:::pcei-artefacts" "$(out_value .public_cloud.value.bucket)"
	check_eq "public cloud: the artefact's ETag is build 1's MD5" \
		"$(md5sum "$PCEI_DIR/www/location-api-1.tar" | cut -d' ' -f1)" "$(out_value .public_cloud.value.artefact_etag)"
else
	check_eq "public cloud: skipped" "skipped (enable_public_cloud = false)" "$(out_value .public_cloud.value)"
fi
if [ "$PCEI_SITES" = 1 ]; then
	check_eq "interconnect: the overlay's two ends" "pcei4210@$SITE1_ADDR pcei4210@$SITE2_ADDR" \
		"$(out_value '.interconnect.value.overlay_links | "\(.a) \(.b)"')"
	check_eq "interconnect: the sites' files" "$SITE1_ROOT/pcei/attachment.conf" \
		"$(out_value .interconnect.value.site_files.edge)"
else
	check_eq "interconnect: the overlay is skipped" "skipped (enable_sites = false)" \
		"$(out_value .interconnect.value.overlay_links)"
fi
if [ "$PCEI_APP" = 1 ]; then
	check_eq "edge cloud: the container" "$CONTAINER_ID" "$(out_value .edge_cloud.value.container)"
	check_true "edge cloud: the image" bash -c "[[ '$(out_value .edge_cloud.value.image)' == sha256:* ]]"
	check_eq "app_url" "$APP_URL" "$(out_value .app_url.value)"
else
	check_eq "edge cloud: skipped" "skipped (enable_app = false)" "$(out_value .edge_cloud.value)"
fi

# ---- plans ----------------------------------------------------------------------------

say "a second plan"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "is empty" 0

say "one input changed: only what depends on it"
check_eq "bandwidth_mbps 500 -> 1000: the provider's connection, updated, and nothing else" \
	"module.fabric.connection.edge-to-cloud update" "$(plan_changes --var bandwidth_mbps=1000)"
if [ "$PCEI_S3" = 1 ]; then
	WANT="module.cloud.object.app update"
	SUMMARY="0 created, 1 updated, 0 replaced, 0 destroyed"
	if [ "$PCEI_APP" = 1 ]; then
		WANT="$WANT
module.edge.container.pcei-location-api delete+create
module.edge.image.location-api create+delete"
		SUMMARY="0 created, 1 updated, 2 replaced, 0 destroyed"
	fi
	check_eq "app_version 1 -> 2: the artefact, the image and the container, and nothing else" \
		"$WANT" "$(plan_changes --var app_version=2)"
	mo apply "$PLAN" "${V[@]}" --var app_version=2 --auto-approve
	check_rc "apply of app_version 2" 0
	check_has "counts: $SUMMARY" "$SUMMARY"
	check_eq "the artefact is build 2" "$PCEI_SHA2" \
		"$(curl -sS --max-time 10 "$PCEI_S3_DIRECT/pcei-artefacts/location-api/rootfs.tar" | sha256sum | cut -d' ' -f1)"
	if [ "$PCEI_APP" = 1 ]; then
		img=$(_pcei_dapi http://d/v1.41/containers/pcei-location-api/json | jq -r .Image)
		check_eq "the container runs build 2" "$PCEI_SHA2" \
			"$(_pcei_dapi "http://d/v1.41/images/$img/json" | jq -r '(.Config.Labels // .Labels // {})["mecorch.sha256"]')"
		check_true "a new container" test "$(_pcei_dapi http://d/v1.41/containers/pcei-location-api/json | jq -r .Id)" != "$CONTAINER_ID"
		check_eq "the application answers" "zone01 zone02 zone03" \
			"$(curl -sS --max-time 10 "$APP_URL/queries/zones" | jq -r '[.zoneList.zone[].zoneId] | join(" ")' 2>/dev/null)"
		check_eq "one image of the lab left (the old one is gone)" 1 "$(pcei_images | grep -c .)"
	fi
	check_eq "the provider's connection was not touched" "$CONN_ID $CONN_VERSION" \
		"$(conn_json | jq -r '"\(.id) \(.version)"')"
	if [ "$PCEI_SITES" = 1 ]; then
		check_eq "the overlay's links were not touched" "$IFX_EDGE $IFX_CGW" \
			"$(ifindex "$SITE1_NS") $(ifindex "$SITE2_NS")"
		check_eq "the edge site's file was not rewritten" "$FILE_MTIME" \
			"$(stat -c %Y.%i "$SITE1_ROOT/pcei/attachment.conf")"
	fi
	V+=(--var app_version=2)
	mo plan "$PLAN" "${V[@]}" --detailed-exitcode
	check_rc "plan is empty after the change" 0
fi

# ---- destroy ----------------------------------------------------------------------------

say "destroy"
check_true "before: the peers hold the lab's objects" test -n "$(pcei_leftovers)"
mo destroy "$PLAN" "${V[@]}" --auto-approve
check_rc "destroy succeeds" 0
check_has "destroys all $WANT_CREATES" "$WANT_CREATES destroyed, 0 failed"
check_eq "s3rver: no bucket" "" "$(pcei_s3_buckets)"
check_eq "podman: no container of the lab" "" "$(pcei_containers)"
check_eq "podman: no image of the lab" "" "$(pcei_images)"
check_eq "the provider: no connection" "" "$(pcei_connections)"
check_eq "the sites: no VXLAN link" "" "$(pcei_vxlan_links)"
check_eq "the sites: no file" "" "$(pcei_site_files)"
check_eq "the state: no resource" 0 "$("$MECORCH" show --json </dev/null | jq -s '[.[] | select(.address != null)] | length')"
if [ "$PCEI_SITES" = 1 ]; then
	check_true "the underlay still works" quiet ip netns exec "$SITE2_NS" ping -c 1 -w 30 "$SITE1_ADDR"
fi

say "the lab torn down"
SITES_PFX=${LAB_PREFIX:-}
if [ "$FAILED" -gt 0 ]; then PCEI_KEEP=1 pcei_lab_down; else pcei_lab_down; fi
if [ -n "$SITES_PFX" ]; then
	check_eq "no namespace of the sites left" "" "$(ip netns list | awk '{print $1}' | grep "^${SITES_PFX}" || true)"
fi

# ---- the demo ------------------------------------------------------------------------------

say "examples/pcei/run.sh, as scripts/demo runs it"
"$MO_SOURCE_DIR/examples/pcei/run.sh" </dev/null >"$T/run.log" 2>&1
rc=$?
check_eq "run.sh passes (exit 0)" 0 "$rc"
check_true "run.sh: every peer is empty at the end" grep -q '^ok - every peer is empty' "$T/run.log"
check_true "run.sh: no check failed" grep -qE '^[0-9]+ checks passed, 0 failed$' "$T/run.log"
[ "$rc" -eq 0 ] || tail -n 30 "$T/run.log"

say "run.sh with the sites and the application switched off"
PCEI_SKIP="sites app" "$MO_SOURCE_DIR/examples/pcei/run.sh" </dev/null >"$T/run-skip.log" 2>&1
rc=$?
check_eq "run.sh passes (exit 0)" 0 "$rc"
check_true "it says the sites are skipped, and why" \
	grep -qE '^  sites and overlay .*skipped: switched off \(PCEI_SKIP\)' "$T/run-skip.log"
check_true "it says the application is skipped, and why" \
	grep -qE '^  edge cloud and MEC app .*skipped: switched off \(PCEI_SKIP\)' "$T/run-skip.log"
check_true "the rest ran: the provider's connection was created" \
	grep -q 'module.fabric.connection.edge-to-cloud: create done' "$T/run-skip.log"
[ "$rc" -eq 0 ] || tail -n 30 "$T/run-skip.log"

# ---- the result ------------------------------------------------------------------------------

if [ -n "$SKIPPED" ]; then
	echo
	echo "skipped parts (not checked):"
	echo "$SKIPPED"
fi
if [ "$FAILED" -eq 0 ] && [ "$PCEI_S3$PCEI_SITES$PCEI_APP" = 000 ]; then
	echo
	echo "skipped: nothing beyond the interconnection provider could run here"
	echo "$PASSED passed, $FAILED failed, skipped"
	exit 77
fi
finish
