#!/usr/bin/env bash
# test_interconnect.sh - plans/lab-interconnect.lua on two netns sites
# (examples/lab/sites.sh): each site's package, file and service over SSH and
# a VXLAN overlay between them.  The package is a dummy one served from a
# local apt repository, so that it is really installed.  Checks that a wrong
# host key for site B is refused with both fingerprints while site A's
# independent resources (its package installed) are applied and B is
# untouched (nothing ran there); that the overlay carries traffic (ping
# across it); that plan is empty after apply; that drift is seen and
# repaired: an address removed, and B's end of the link deleted; that a new
# VNI replaces both ends and the data plane works again; that destroy
# removes the links (and the ping then fails); that the lab's teardown leaves
# no namespace, link, user, sudoers entry, route or package behind.
# Needs root (namespaces, a test user, sshd), apt-get and dpkg-deb; skipped
# otherwise.

if [ "$(id -u)" -ne 0 ]; then
	echo "skipped: needs root"
	exit 77 # ctest: SKIP_RETURN_CODE
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
	echo "skipping: needs apt-get and dpkg-deb (the site package is a local apt repository's)"
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

# ---- a package of our own (lib_probe.sh) ---------------------------------------
# shellcheck source=lib_probe.sh
source "$(dirname "$0")/lib_probe.sh" || exit 1

lab_down() {
	probe_cleanup
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
if ! probe_setup; then
	cat "$T/apt-update.log" 2>/dev/null
	_fail "a local apt repository with the dummy package $PROBE"
	finish
fi
check_true "the dummy package $PROBE is not installed yet" bash -c "! dpkg-query -W '$PROBE' >/dev/null 2>&1"

vars() {
	echo --var user="$LAB_USER" --var key_file="$LAB_KEY" \
		--var a_host="$SITE1_ADDR" --var a_fp="$SITE1_FP" --var a_root="$SITE1_ROOT" \
		--var b_host="$SITE2_ADDR" --var b_fp="${B_FP:-$SITE2_FP}" --var b_root="$SITE2_ROOT" \
		--var package="$PROBE"
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
check_true "A's package installed" probe_installed
check_eq "dpkg installed it once" 1 "$(probe_installs)"
# Both sites see this machine's dpkg database, so dpkg cannot tell "on B"
# from "on A": what shows that B's package was not installed is that
# nothing ran on B at all (its sshd accepted no login: the client hung up
# at the host key) and that the state holds no package of B.
"$MECORCH" state list </dev/null >"$T/addrs" 2>&1
check_true "A's package is in the state" grep -qxF "module.site_a.package.$PROBE" "$T/addrs"
check_true "nothing of B in the state (no package, file, service or link)" bash -c "! grep -qF 'module.site_b.' '$T/addrs'"
check_true "nothing ran on B: its sshd accepted no login" bash -c "! grep -q 'Accepted publickey' '$LABDIR/s2/sshd.log'"

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
"$MECORCH" state list </dev/null >"$T/addrs" 2>&1
check_true "B's package is in the state" grep -qxF "module.site_b.package.$PROBE" "$T/addrs"
check_eq "no second install (already there, in the shared dpkg database)" 1 "$(probe_installs)"

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

say "drift: B's end of the link deleted behind mecorch's back"
MAC_B=$(ip -n "$B" -j link show vx42 | jq -r '.[0].address')
ip -n "$B" link del vx42
check_true "the link is gone on B" bash -c "! ip -n $B link show vx42 >/dev/null 2>&1"
check_true "the ping now fails" bash -c "! ip netns exec $A ping -c 1 -W 1 10.250.200.2 >/dev/null"
mo refresh "$PLAN" $(vars) --detailed-exitcode
check_rc "refresh reports drift" 2
check_has "B's end of the link is gone" "module.overlay.vxlan.b: gone"
check_has "and nothing else drifted" "Drift: 1 resource(s) differ"
mo apply "$PLAN" $(vars) --auto-approve
check_rc "apply recreates it" 0
check_true "VXLAN on B again: id 42, remote A" bash -c \
	"ip -n $B -d link show vx42 | grep -q 'vxlan id 42 remote $SITE1_ADDR local $SITE2_ADDR'"
check_true "with its overlay address" bash -c "ip -n $B -4 addr show dev vx42 | grep -q 'inet 10.250.200.2/24'"
check_eq "the recreated link has the same MAC (derived from host, name, address)" "$MAC_B" \
	"$(ip -n "$B" -j link show vx42 | jq -r '.[0].address')"
# A's neighbour entry for 10.250.200.2 still names that MAC, so A reaches
# B at once, without waiting for the entry to expire.
check_true "ping A -> B works again" quiet ip netns exec "$A" ping -c 1 -w 30 10.250.200.2
check_true "ping B -> A works again" quiet ip netns exec "$B" ping -c 1 -w 30 10.250.200.1
mo plan "$PLAN" $(vars) --detailed-exitcode
check_rc "plan is empty again" 0

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
check_true "the package stays installed" probe_installed

# ---- teardown ------------------------------------------------------------------

# The same teardown the EXIT trap runs (it then finds nothing left to do),
# here so that what it leaves behind can be checked.

# What of the lab is on the machine: "KIND NAME" for the network namespaces,
# the root namespace's links, the users and the sudoers entries named with
# the lab's prefix followed by a non-digit (another lab's prefix may merely
# start with ours: mo12 / mo123); then the sshd processes of its sites and
# the route to its underlay.
lab_traces() {
	{
		ip netns list | awk '{print "netns " $1}'
		ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print "link " $2}'
		getent passwd | awk -F: '{print "user " $1}'
		ls /etc/sudoers.d | sed 's/^/sudoers /'
	} | grep -E "^[a-z]+ ${LAB_PREFIX}([^0-9]|\$)"
	pgrep -f "$LABDIR/s[0-9]+/sshd_config" | sed 's/^/sshd /'
	ip -4 route show root "10.250.$LAB_SLOT.0/24" | sed 's/^/route /'
	return 0
}

say "lab teardown"
lab_traces >"$T/traces.before"
check_eq "before: the lab's kinds of traces are found" "link netns route sshd sudoers user" \
	"$(cut -d' ' -f1 "$T/traces.before" | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')"
probe_cleanup
check_true "the dummy package is purged" bash -c "! dpkg-query -W '$PROBE' >/dev/null 2>&1"
check_true "its apt source list is gone" test ! -e "$APT_LIST"
check_true "its apt index is gone" bash -c "! ls '$APT_INDEX'* >/dev/null 2>&1"
"$SITES" down "$LABDIR" >"$T/down.log" 2>&1
check_true "sites.sh down succeeds" grep -q "lab $LAB_PREFIX removed" "$T/down.log"
lab_traces >"$T/traces.after"
check_eq "after: no namespace, link, user, sudoers entry, sshd or route of the lab" "" \
	"$(cat "$T/traces.after")"

finish
