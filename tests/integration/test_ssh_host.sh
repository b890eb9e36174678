#!/usr/bin/env bash
# test_ssh_host.sh - iac-modules/bare-metal/ssh-host on one netns site
# (examples/lab/sites.sh): a package, a file, a service and a user.
# Checks apply and an empty plan afterwards; the package's install path (a
# dummy package from a local apt repository: installed once, not again by
# the next apply; removed behind mecorch's back, refresh reports it gone and
# apply installs it again); file drift (content and mode
# changed behind mecorch's back: refresh reports it, apply restores it); a
# killed service (read notices the dead pid, apply restarts it) and a changed
# command (restart with the new one); a user removed behind mecorch's back and
# a changed shell; a private key passed as a sensitive variable (apply, plan
# and destroy work; the key never reaches the state or the output in clear);
# destroy (file, service, user gone; the package stays installed).
# Needs root (namespaces, test users, sshd), sudo, apt-get and dpkg-deb;
# skipped otherwise.

if [ "$(id -u)" -ne 0 ]; then
	echo "skipped: needs root"
	exit 77 # ctest: SKIP_RETURN_CODE
fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
	echo "skipping: needs apt-get and dpkg-deb (the package checks use a local apt repository)"
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

# the lab's packages (sudo, sshd), should the machine lack them
if ! command -v sudo >/dev/null || [ ! -x /usr/sbin/sshd ]; then
	"$MO_SOURCE_DIR/scripts/install-ssh-lab" >/dev/null
fi

SITES=$MO_SOURCE_DIR/examples/lab/sites.sh
MODULE=$MO_SOURCE_DIR/iac-modules/bare-metal/ssh-host
LABDIR=$(mktemp -d /tmp/mecorch-sites.XXXXXX)
chmod 755 "$LABDIR"

# ---- a package of our own (lib_probe.sh) ---------------------------------------
# shellcheck source=lib_probe.sh
source "$(dirname "$0")/lib_probe.sh" || exit 1

lab_down() {
	[ -n "${U:-}" ] && userdel "$U" >/dev/null 2>&1
	probe_cleanup
	"$SITES" down "$LABDIR" >/dev/null 2>&1 || "$SITES" down "$LABDIR"
	rm -rf "$LABDIR"
}
trap 'lab_down; _it_cleanup' EXIT

say "one site"
if ! "$SITES" up 1 "$LABDIR" >"$T/sites.log" 2>&1; then
	cat "$T/sites.log"
	_fail "sites.sh up 1"
	finish
fi
. "$LABDIR/sites.env"
[ "$LAB_SUDO" = 1 ] || {
	echo "sudo is missing (scripts/install-ssh-lab): users need it"
	_fail "sudo available for the lab user"
	finish
}
R=$SITE1_ROOT
U=${LAB_USER}u

if ! probe_setup; then
	cat "$T/apt-update.log" 2>/dev/null
	_fail "a local apt repository with the dummy package $PROBE"
	finish
fi
check_true "the dummy package $PROBE is not installed yet" bash -c "! dpkg-query -W '$PROBE' >/dev/null 2>&1"
check_true "apt sees it in the local repository" bash -c \
	"apt-cache policy '$PROBE' | grep -q 'Candidate: 1.0'"

# The plan: everything of the module against site 1.
cat >"$T/plan.lua" <<EOF
local host = variable("host", { type = "string" })
local fp = variable("fp", { type = "string" })
local root = variable("root", { type = "string" })
local user = variable("user", { type = "string" })
local key_file = variable("key_file", { type = "string" })
local cmd = variable("cmd", { type = "string", default = "sleep 100000" })
local shell = variable("shell", { type = "string", default = "/bin/sh" })
local h = module("h", {
  source = "$MODULE",
  inputs = {
    host = host, user = user, host_key_sha256 = fp, sudo = true,
    key_file = key_file,
    packages = { "$PROBE" },
    files = { conf = { path = root .. "/etc/app.conf", content = "port = 8080\n", mode = "0640" } },
    services = { app = { command = cmd, pidfile = root .. "/app.pid", log = root .. "/app.log",
                         workdir = root } },
    users = { ["$U"] = { shell = shell, home = root .. "/home-$U", comment = "lab user" } },
  },
})
output("packages", h.packages)
EOF

V=(--var host="$SITE1_ADDR" --var fp="$SITE1_FP" --var root="$R" --var user="$LAB_USER")
K=(--var key_file="$LAB_KEY")

pid_of() {
	cat "$R/app.pid" 2>/dev/null
}
running() { # PID: alive and not a zombie
	[ -n "$1" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null
}

# ---- apply ---------------------------------------------------------------------

say "apply"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --auto-approve
check_rc "apply succeeds" 0
check_eq "file content" "port = 8080" "$(cat "$R/etc/app.conf" 2>/dev/null)"
check_eq "file mode" "640" "$(stat -c %a "$R/etc/app.conf" 2>/dev/null)"
P1=$(pid_of)
check_true "service running" running "$P1"
check_true "service tagged with its name" bash -c \
	"tr '\\0' '\\n' </proc/$P1/environ | grep -q '^MECORCH_SERVICE=app:'"
check_eq "user exists with its shell and home" "/bin/sh $R/home-$U" \
	"$(getent passwd "$U" | awk -F: '{print $7, $6}')"
check_true "the package is installed" probe_installed
check_eq "dpkg installed it once" 1 "$(probe_installs)"
check_eq "its file is there" "$PROBE 1.0" "$(cat "/usr/share/$PROBE/probe" 2>/dev/null)"
mo output packages
check_has "the package's version is an output" "\"$PROBE\":\"1.0\""

mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "plan is empty after apply" 0

say "apply again"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --auto-approve
check_rc "apply succeeds" 0
check_has "nothing to do" "Apply complete: 0 created, 0 updated, 0 replaced, 0 destroyed"
check_eq "no second install" 1 "$(probe_installs)"

# ---- package drift ---------------------------------------------------------------

say "package removed behind mecorch's back"
dpkg --purge "$PROBE" >"$T/purge.log" 2>&1
check_true "the package is gone" bash -c "! dpkg-query -W -f='\${Status}' '$PROBE' 2>/dev/null | grep -q 'ok installed'"
mo refresh "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "refresh reports drift" 2
check_has "the package is gone" "module.h.package.$PROBE: gone"
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "plan sees a change" 2
check_has "the package will be installed" "module.h.package.$PROBE will be created"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --auto-approve
check_rc "apply reinstalls it" 0
check_true "the package is installed again" probe_installed
check_eq "dpkg installed it a second time" 2 "$(probe_installs)"
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "plan is empty again" 0

# ---- file drift ------------------------------------------------------------------

say "file changed behind mecorch's back"
echo "port = 9999" >"$R/etc/app.conf"
chmod 600 "$R/etc/app.conf"
mo refresh "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "refresh reports drift" 2
check_has "content and mode changed" 'module.h.file.conf: changed ["content","mode"]'
"$MECORCH" plan "$T/plan.lua" "${V[@]}" "${K[@]}" --json </dev/null 2>/dev/null |
	jq -r 'select(.type == "plan") | .resource_changes[] | select(.address == "module.h.file.conf") |
		.change.before.content' >"$T/before"
check_eq "the plan shows the remote content's hash" \
	"(changed on the host: sha256 $(printf 'port = 9999\n' | sha256sum | cut -c1-64))" "$(cat "$T/before")"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --auto-approve
check_rc "apply restores it" 0
check_eq "content restored" "port = 8080" "$(cat "$R/etc/app.conf")"
check_eq "mode restored" "640" "$(stat -c %a "$R/etc/app.conf")"

# ---- service -------------------------------------------------------------------

say "service killed behind mecorch's back"
kill -KILL -- "-$P1" 2>/dev/null || kill -KILL "$P1"
for _ in $(seq 300); do running "$P1" || break; sleep 0.1; done # up to 30 s
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --detailed-exitcode
check_rc "plan sees a change" 2
check_has "the service is stopped" 'status = "stopped" -> "running"'
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --auto-approve
check_rc "apply restarts it" 0
P2=$(pid_of)
check_true "a new process runs" bash -c "[ '$P2' != '$P1' ] && [ -d /proc/$P2 ]"

say "service command changed"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --auto-approve
check_rc "apply succeeds" 0
P3=$(pid_of)
check_true "the old process is gone" bash -c "! [ -d /proc/$P2 ] || grep -q '^State:.*zombie' /proc/$P2/status"
check_true "the new one runs the new command" bash -c \
	"pgrep -P $P3 -f 'sleep 200000' >/dev/null || grep -q 'sleep 200000' /proc/$P3/cmdline"
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --detailed-exitcode
check_rc "plan is empty" 0

# ---- user ----------------------------------------------------------------------

say "user removed behind mecorch's back, then a new shell"
userdel "$U"
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --detailed-exitcode
check_rc "plan sees it" 2
check_has "the user will be created" "module.h.user.$U will be created"
mo apply "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --var shell=/bin/bash --auto-approve
check_rc "apply succeeds" 0
check_eq "user back, with the new shell" "/bin/bash" "$(getent passwd "$U" | cut -d: -f7)"
usermod -s /bin/sh "$U"
mo plan "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --var shell=/bin/bash
check_has "a shell changed on the host is an update" 'shell = "/bin/sh" -> "/bin/bash"'

# ---- the key as a sensitive variable -------------------------------------------

# In a state of its own: a file written with the key given as text.
say "private key given as a sensitive variable"
cat >"$T/keyplan.lua" <<EOF
local key_text = variable("key_text", { type = "string", sensitive = true })
module("k", {
  source = "$MODULE",
  inputs = {
    host = "$SITE1_ADDR", user = "$LAB_USER", host_key_sha256 = "$SITE1_FP", key = key_text,
    files = { f = { path = "$R/keyed.txt", content = "written with a key from a variable\\n" } },
  },
})
EOF
KEY_LINE=$(sed -n 3p "$LAB_KEY")
MECORCH_VAR_key_text=$(cat "$LAB_KEY") mo apply "$T/keyplan.lua" --state "$T/key.db" --auto-approve
check_rc "apply with the key text succeeds" 0
check_eq "the file was written" "written with a key from a variable" "$(cat "$R/keyed.txt" 2>/dev/null)"
MECORCH_VAR_key_text=$(cat "$LAB_KEY") mo plan "$T/keyplan.lua" --state "$T/key.db" --detailed-exitcode
check_rc "plan is empty (refresh logs in with the declared key)" 0
check_lacks "the key text is not in the output" "$KEY_LINE"
check_true "the key text is not in the state" bash -c "! grep -qF -- '$KEY_LINE' '$T/key.db'"
MECORCH_VAR_key_text=$(cat "$LAB_KEY") mo destroy "$T/keyplan.lua" --state "$T/key.db" --auto-approve
check_rc "destroy with the key text succeeds (the plan's value behind the stored hash)" 0
check_true "the file is gone" test ! -e "$R/keyed.txt"

# ---- destroy -------------------------------------------------------------------

say "destroy"
mo destroy "$T/plan.lua" "${V[@]}" "${K[@]}" --var cmd="sleep 200000" --var shell=/bin/bash --auto-approve
check_rc "destroy succeeds" 0
check_true "file removed" test ! -e "$R/etc/app.conf"
check_true "service stopped" bash -c "! [ -d /proc/$P3 ] || grep -q '^State:.*zombie' /proc/$P3/status"
check_true "pidfile removed" test ! -e "$R/app.pid"
check_true "user removed" bash -c "! getent passwd $U >/dev/null"
check_true "the package stays installed" probe_installed

finish
