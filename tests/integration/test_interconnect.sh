#!/usr/bin/env bash
# test_interconnect.sh - plans/lab-interconnect.lua on two netns sites
# (examples/lab/sites.sh): each site's package, file and service over SSH and
# a VXLAN overlay between them.  Checks that a wrong host key for site B is
# refused with both fingerprints while site A's independent resources are
# applied and B is untouched; that the overlay carries traffic (ping across
# it); that plan is empty after apply; that drift of an address is seen and
# repaired; that a new VNI replaces both ends and the data plane works again;
# that destroy removes the links (and the ping then fails).
# Needs root (namespaces, a test user, sshd); skipped otherwise.

if [ "$(id -u)" -ne 0 ]; then
	echo "skipping: needs root"
	echo "0 passed, 0 failed"
	exit 0
fi

. "$(dirname "$0")/lib.sh"

# check_has / check_lacks DESC TEXT: the last `mo`'s stdout+stderr contains
# (lacks) TEXT.  grep reads the files itself: no pipe that an early match
# could break under pipefail.
check_has() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}
check_lacks() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_fail "$1" "expected the output not to contain: $2"
		_last_output
	else
		_pass "$1"
	fi
}

# the lab's packages (ping, sudo, sshd), should the machine lack them
if ! command -v ping >/dev/null || ! command -v sudo >/dev/null || [ ! -x /usr/sbin/sshd ]; then
	"$MO_SOURCE_DIR/scripts/install-ssh-lab" >/dev/null
fi

SITES=$MO_SOURCE_DIR/examples/lab/sites.sh
PLAN=$MO_SOURCE_DIR/plans/lab-interconnect.lua
LABDIR=$(mktemp -d /tmp/mecorch-sites.XXXXXX)
chmod 755 "$LABDIR"

lab_down() {
	"$SITES" down "$LABDIR" >/dev/null 2>&1 || "$SITES" down "$LABDIR"
	rm -rf "$LABDIR"
}
trap 'lab_down; _it_cleanup' EXIT

say "two sites"
if ! "$SITES" up 2 "$LABDIR" >"$T/sites.log" 2>&1; then
	cat "$T/sites.log"
	_fail "sites.sh up 2"
	finish
fi
. "$LABDIR/sites.env"
A=$SITE1_NS
B=$SITE2_NS
[ "$LAB_SUDO" = 1 ] || {
	echo "sudo is missing (scripts/install-ssh-lab): the overlay needs it"
	_fail "sudo available for the lab user"
	finish
}

vars() {
	echo --var user="$LAB_USER" --var key_file="$LAB_KEY" \
		--var a_host="$SITE1_ADDR" --var a_fp="$SITE1_FP" --var a_root="$SITE1_ROOT" \
		--var b_host="$SITE2_ADDR" --var b_fp="${B_FP:-$SITE2_FP}" --var b_root="$SITE2_ROOT"
}

# Run quietly (ping and ip print a lot); the status is what counts.  A ping
# that must get through gets a deadline (-c 1 -w 30: it ends at the first
# reply); one that must fail keeps a short wait.
quiet() {
	"$@" >/dev/null 2>&1
}

pid_alive() {
	[ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# ---- a wrong host key for site B -----------------------------------------------

say "apply with a wrong host key fingerprint for site B"
mo apply "$PLAN" $(B_FP=$SITE1_FP vars) --auto-approve
check_rc "apply fails" 1
check_has "the error names B, the expected and the presented fingerprint" \
	"host key mismatch for $SITE2_ADDR:22: expected $SITE1_FP, the server presented $SITE2_FP; refusing to connect"
check_true "nothing on B: no file" test ! -e "$SITE2_ROOT/motd"
check_true "nothing on B: no service" test ! -e "$SITE2_ROOT/beacon.pid"
check_true "nothing on B: no link" bash -c "! ip -n $B link show vx42 >/dev/null 2>&1"
check_true "A's file applied" test -f "$SITE1_ROOT/motd"
check_true "A's service running" pid_alive "$SITE1_ROOT/beacon.pid"
check_true "A's end of the link exists" quiet ip -n "$A" link show vx42

# ---- converge ------------------------------------------------------------------

say "apply with the right fingerprints"
mo apply "$PLAN" $(vars) --auto-approve
check_rc "apply succeeds" 0
check_eq "B's file content" "managed by mecorch: site_b" "$(cat "$SITE2_ROOT/motd" 2>/dev/null)"
check_true "B's service running" pid_alive "$SITE2_ROOT/beacon.pid"
check_true "VXLAN on A: id 42, remote B" bash -c \
	"ip -n $A -d link show vx42 | grep -q 'vxlan id 42 remote $SITE2_ADDR local $SITE1_ADDR'"
check_true "ping A -> B over the overlay" quiet ip netns exec "$A" ping -c 1 -w 30 10.250.200.2
check_true "ping B -> A over the overlay" quiet ip netns exec "$B" ping -c 1 -w 30 10.250.200.1

mo plan "$PLAN" $(vars) --detailed-exitcode
check_rc "plan is empty after apply" 0

# ---- drift ---------------------------------------------------------------------

say "drift: B's overlay address removed behind mecorch's back"
ip -n "$B" addr flush dev vx42
check_true "the ping now fails" bash -c "! ip netns exec $A ping -c 1 -W 1 10.250.200.2 >/dev/null"
mo refresh "$PLAN" $(vars) --detailed-exitcode
check_rc "refresh reports drift" 2
check_has "on the link's B end" "module.overlay.vxlan.b"
mo apply "$PLAN" $(vars) --auto-approve
check_rc "apply repairs it" 0
check_true "ping A -> B works again" quiet ip netns exec "$A" ping -c 1 -w 30 10.250.200.2

# ---- a new VNI -----------------------------------------------------------------

say "VNI 42 -> 43"
"$MECORCH" plan "$PLAN" $(vars) --var vni=43 --json </dev/null 2>/dev/null |
	jq -r 'select(.type == "plan") | .resource_changes[] | select(.change.actions != ["no-op"]) |
		"\(.address) \(.change.actions | join("+"))"' | LC_ALL=C sort >"$T/vni.plan"
check_eq "plan replaces both ends and nothing else" \
	"module.overlay.vxlan.a delete+create
module.overlay.vxlan.b delete+create" "$(cat "$T/vni.plan")"
mo apply "$PLAN" $(vars) --var vni=43 --auto-approve
check_rc "apply succeeds" 0
check_true "vx42 is gone on A" bash -c "! ip -n $A link show vx42 >/dev/null 2>&1"
check_true "vx43 on B has id 43" bash -c "ip -n $B -d link show vx43 | grep -q 'vxlan id 43 '"
check_true "ping A -> B over the new overlay" quiet ip netns exec "$A" ping -c 1 -w 30 10.250.200.2
mo plan "$PLAN" $(vars) --var vni=43 --detailed-exitcode
check_rc "plan is empty again" 0

# ---- destroy -------------------------------------------------------------------

say "destroy"
pa=$(cat "$SITE1_ROOT/beacon.pid")
mo destroy "$PLAN" $(vars) --var vni=43 --auto-approve
check_rc "destroy succeeds" 0
check_true "link gone on A" bash -c "! ip -n $A link show vx43 >/dev/null 2>&1"
check_true "link gone on B" bash -c "! ip -n $B link show vx43 >/dev/null 2>&1"
check_true "the ping fails" bash -c "! ip netns exec $A ping -c 1 -W 1 10.250.200.2 >/dev/null 2>&1"
check_true "files removed" test ! -e "$SITE1_ROOT/motd" -a ! -e "$SITE2_ROOT/motd"
check_true "A's service stopped" bash -c "! kill -0 $pa 2>/dev/null || grep -q '^State:.*zombie' /proc/$pa/status"
check_true "the underlay itself still works" quiet ip netns exec "$A" ping -c 1 -w 30 "$SITE2_ADDR"

finish
