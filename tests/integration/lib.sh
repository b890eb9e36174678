# lib.sh - shared helpers of the integration tests (tests/integration/test_*.sh).
#
# Source it from a test script: it sets `-u -o pipefail` (not -e: the tests
# look at exit statuses), creates a private temp directory $T, points
# MECORCH_STATE at $T/state.db and the module cache at $T/cache, cds into $T,
# and on EXIT kills every labcloud and background mecorch it started and
# removes $T (kept, and its path printed, when a check failed or IT_KEEP=1).
#
# Binaries come from the environment CMake sets for ctest (MECORCH, LABCLOUD,
# MO_SOURCE_DIR), else from the build/ directory beside the sources.
#
#   lab_start [labcloud options...]   start labcloud on a free 127.0.0.1 port
#                                     (--port-file); sets LAB_PID LAB_PORT LAB_URL
#   lab_stop                          stop the current labcloud
#   LAB_TOKEN                         set it to the --token of labcloud: the helpers send it
#   lab_get PATH / lab_put PATH JSON / lab_post PATH JSON / lab_delete PATH
#   lab_config JSON                   PUT /_config
#   lab_reset_stats / lab_wipe        POST /_stats/reset / DELETE /_objects
#   lab_stat JQ                       a value of GET /_stats, e.g. lab_stat .max_in_flight
#   lab_total                         total_objects
#   lab_pairs [COLL...]               "collection id" of every object, sorted
#
#   mo ARGS...                        run mecorch; RC, OUT (stdout file), ERR (stderr file)
#   mo_bg LOG ARGS...                 run mecorch in the background; sets BG_PID
#   mo_wait PID                       wait for it; sets BG_RC
#   state_pairs                       "collection id" of every resource in the state, sorted
#   wait_for_lock                     until `lock list` shows a lock (bounded); prints it
#
#   poll_until SECS COMMAND...        run COMMAND every 50 ms until it succeeds (0) or
#                                     SECS seconds have passed (1)
#   it_free_port                      a TCP port of 127.0.0.1 that nothing uses, below the
#                                     kernel's ephemeral range
#   pid_listens PID PORT              PID or one of its descendants listens on TCP PORT
#   wait_listen PORT PID [SECS]       until PID (or a descendant) listens on PORT; fails
#                                     early when PID exits (default 120 s)
#
#   check_rc DESC WANT                RC of the last `mo` equals WANT
#   check_eq DESC WANT GOT
#   check_true DESC COMMAND...        COMMAND succeeds
#   check_out_has DESC TEXT           the last `mo`'s stdout+stderr contains TEXT (fixed string)
#   check_out_lacks DESC TEXT
#   check_lab_matches_state DESC [COLL...]
#                                     labcloud's objects == the state's resources, by id,
#                                     per collection; no duplicate name in a collection
#   finish                            print "N passed, M failed" and exit 0 / 1
#   say TEXT                          a "== TEXT" heading
#   rand_below N / sleep_ms MS
#
# Waits are bounded by generous deadlines (a slow or loaded machine must not
# fail a check), and a server's readiness is polled, never slept for.
#
# Every check prints one line "ok - DESC" or "FAIL - DESC" followed by what was
# expected and what was seen.
#
# Other helper libraries (lib_cloud.sh, ...) append the pids of the servers
# they start to IT_PIDS, or call _it_track PID (which also records the
# process's start time, so that a recycled pid is never signalled); a test
# that replaces the EXIT trap must call _it_cleanup from its own.

set -u -o pipefail

IT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MO_SOURCE_DIR=${MO_SOURCE_DIR:-$(cd "$IT_DIR/../.." && pwd)}
MECORCH=${MECORCH:-$MO_SOURCE_DIR/build/mecorch}
LABCLOUD=${LABCLOUD:-$MO_SOURCE_DIR/build/labcloud}
FIXTURES=$MO_SOURCE_DIR/tests/fixtures
GENERIC=$MO_SOURCE_DIR/iac-modules/lab/generic

for _bin in "$MECORCH" "$LABCLOUD"; do
	if [ ! -x "$_bin" ]; then
		echo "missing binary $_bin (build it, or set MECORCH / LABCLOUD)" >&2
		exit 1
	fi
done
for _tool in curl jq; do
	if ! command -v "$_tool" >/dev/null; then
		echo "the integration tests need $_tool" >&2
		exit 1
	fi
done
unset _bin _tool

PASSED=0
FAILED=0
IT_PIDS=()
LAB_PID=
LAB_PORT=
LAB_URL=
RC=0
MO_N=0

T=$(mktemp -d "${TMPDIR:-/tmp}/mo-it-$(basename "$0" .sh).XXXXXX")
export MECORCH_STATE=$T/state.db
export XDG_CACHE_HOME=$T/cache
export NO_COLOR=1
unset MECORCH_STATE_KEY MECORCH_LOG
# Variables from the caller's environment must not leak into the plans.
while read -r _v; do unset "$_v"; done < <(env | sed -n 's/^\(MECORCH_VAR_[A-Za-z0-9_]*\)=.*/\1/p')
unset _v
OUT=$T/out
ERR=$T/err
cd "$T" || exit 1

# The start time of process $1 (field 22 of /proc/PID/stat), or nothing.
_it_starttime() {
	sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

# _it_track PID: add PID to IT_PIDS and remember its start time, so that a
# recycled pid is never signalled (see _it_ours).
declare -A _IT_START
_it_track() {
	IT_PIDS+=("$1")
	_IT_START[$1]=$(_it_starttime "$1")
}

# Is pid $1 still the process that was tracked?  Pids added to IT_PIDS
# directly (by other helper libraries) are trusted as they are.
_it_ours() {
	[ -z "${_IT_START[$1]:-}" ] && return 0
	[ "$(_it_starttime "$1")" = "${_IT_START[$1]}" ]
}

_it_cleanup() {
	local p
	# No "Killed" job notices from this shell for the servers killed here.
	exec 2>/dev/null
	for p in "${IT_PIDS[@]}"; do
		if _it_ours "$p"; then
			kill -CONT "$p" 2>/dev/null
			kill -KILL "$p" 2>/dev/null
		fi
	done
	for p in "${IT_PIDS[@]}"; do
		wait "$p" 2>/dev/null
	done
	if [ "$FAILED" -gt 0 ] || [ "${IT_KEEP:-0}" = 1 ]; then
		echo "(kept $T)"
	else
		rm -rf "$T"
	fi
}
trap _it_cleanup EXIT

# ---- output -----------------------------------------------------------------

say() {
	echo "== $*"
}

_pass() {
	PASSED=$((PASSED + 1))
	echo "ok - $1"
}

# _fail DESC [detail lines...]
_fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL - $1"
	shift
	local l
	for l in "$@"; do
		echo "    $l"
	done
}

# The tail of the last mecorch run's output, indented, for failure reports.
_last_output() {
	echo "    --- stdout (last 15 lines):"
	tail -n 15 "$OUT" 2>/dev/null | sed 's/^/    | /'
	echo "    --- stderr (last 15 lines):"
	tail -n 15 "$ERR" 2>/dev/null | sed 's/^/    | /'
}

finish() {
	echo
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ] && exit 0
	exit 1
}

# ---- checks -----------------------------------------------------------------

check_eq() {
	if [ "$2" = "$3" ]; then
		_pass "$1"
	else
		_fail "$1" "expected: $2" "seen:     $3"
	fi
}

check_rc() {
	if [ "$RC" -eq "$2" ]; then
		_pass "$1"
	else
		_fail "$1" "expected exit status $2, seen $RC (mecorch ${MO_ARGS:-})"
		_last_output
	fi
}

check_true() {
	local desc=$1
	shift
	if "$@"; then
		_pass "$desc"
	else
		_fail "$desc" "this command failed: $*"
	fi
}

check_out_has() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

check_out_lacks() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_fail "$1" "expected the output not to contain: $2"
		_last_output
	else
		_pass "$1"
	fi
}

# ---- mecorch ----------------------------------------------------------------

# mo ARGS...: run mecorch (stdin closed), stdout to $OUT, stderr to $ERR, RC set.
# Each run's output is also kept as $T/run.N.{out,err} for a post-mortem.
mo() {
	MO_N=$((MO_N + 1))
	MO_ARGS="$*"
	"$MECORCH" "$@" </dev/null >"$OUT" 2>"$ERR"
	RC=$?
	cp "$OUT" "$T/run.$MO_N.out"
	cp "$ERR" "$T/run.$MO_N.err"
	echo "$RC $*" >"$T/run.$MO_N.cmd"
	return 0
}

# mo_bg LOG ARGS...: mecorch in the background, output to LOG; BG_PID is
# mecorch's own pid (for kill -STOP / -KILL).  It runs under a small
# subshell that records its exit status, so a SIGKILL is not reported by
# this shell as a crashed job; mo_wait PID collects that status.
declare -A _BG_SUB _BG_LOG
mo_bg() {
	local log=$1 i
	shift
	rm -f "$log.pid" "$log.rc"
	(
		"$MECORCH" "$@" </dev/null >"$log" 2>&1 &
		echo $! >"$log.pid"
		wait $!
		echo $? >"$log.rc"
	) 2>/dev/null &
	local sub=$!
	for i in $(seq 1 3000); do # up to 30 s: a fork on a loaded machine
		[ -s "$log.pid" ] && break
		sleep 0.01
	done
	BG_PID=$(cat "$log.pid")
	_BG_SUB[$BG_PID]=$sub
	_BG_LOG[$BG_PID]=$log
	_it_track "$BG_PID"
}

# mo_wait PID: wait for a mo_bg run to end; BG_RC is its exit status (137
# when it was killed with SIGKILL).
mo_wait() {
	wait "${_BG_SUB[$1]}" 2>/dev/null
	BG_RC=$(cat "${_BG_LOG[$1]}.rc" 2>/dev/null || echo "?")
}

# "collection id" for every resource of the state (any status), sorted.
# A resource without an id prints "collection <no-id>".
# A failing `show` prints a marker line instead, so no comparison passes by
# accident (an empty list from a state that could not be read).
state_pairs() {
	local js
	if ! js=$("$MECORCH" show --json </dev/null 2>&1); then
		echo "<mecorch show --json failed: $(printf '%s' "$js" | head -c 300)>"
		return 1
	fi
	printf '%s\n' "$js" |
		jq -r 'select(.address != null) |
			"\(.props.collection // "<no-collection>") \(if (.id // "") == "" then "<no-id>" else .id end)"' |
		LC_ALL=C sort
}

# Wait (bounded, 60 s) until `lock list --json` shows a lock; prints its JSON.
wait_for_lock() {
	local l end=$((SECONDS + 60))
	while :; do
		l=$("$MECORCH" lock list --json </dev/null 2>/dev/null | jq -c '.lock // empty' 2>/dev/null)
		if [ -n "$l" ]; then
			echo "$l"
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.05
	done
}

# ---- waiting, ports -----------------------------------------------------------

# poll_until SECS COMMAND...: run COMMAND until it succeeds (return 0) or
# SECS seconds have passed (return 1); COMMAND runs at least once.
poll_until() {
	local end=$((SECONDS + $1))
	shift
	while :; do
		"$@" && return 0
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.05
	done
}

# shellcheck source=lib_net.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib_net.sh" || exit 1

# read_port_file NAME PID FILE LOG [SECS]: wait (default 60 s) for a server
# started in the background to write its port to FILE; print the port.
# Returns 1 when the server exits first (LOG's tail goes to stderr) or the
# file never appears.  Callers exit on 1, or try another port.
read_port_file() {
	local name=$1 pid=$2 pf=$3 log=$4 secs=${5:-60} i
	for i in $(seq 1 $((secs * 20))); do
		[ -s "$pf" ] && break
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "$name exited at start:" >&2
			tail -n 5 "$log" >&2
			return 1
		fi
		sleep 0.05
	done
	if [ ! -s "$pf" ]; then
		echo "$name did not write its port file" >&2
		return 1
	fi
	tr -d '[:space:]' <"$pf"
}

# emu_start NAME PORT LOG BINARY ARGS...: start one of the lab's emulators
# (they take --listen and --port-file) on 127.0.0.1:PORT, or, with PORT
# empty, on a free port below the ephemeral range (another one if it could
# not bind it), so that no outgoing connection takes the port while the
# emulator is down between a kill and its restart on it.  Sets EMU_PID and
# EMU_PORT; exits when it does not start.
emu_start() {
	local name=$1 want=$2 log=$3 pf=$T/$1.port try port=$2
	shift 3
	for try in 1 2 3 4 5; do
		[ -n "$want" ] || port=$(it_free_port)
		rm -f "$pf"
		"$@" --listen "127.0.0.1:$port" --port-file "$pf" >>"$log" 2>&1 &
		EMU_PID=$!
		IT_PIDS+=("$EMU_PID")
		EMU_PORT=$(read_port_file "$name" "$EMU_PID" "$pf" "$log" 2>/dev/null) && return 0
		kill -KILL "$EMU_PID" 2>/dev/null
		wait "$EMU_PID" 2>/dev/null
		[ -n "$want" ] && break # a restart: that port or none
	done
	echo "$name did not start:" >&2
	tail -n 5 "$log" >&2
	exit 1
}

# ---- labcloud ---------------------------------------------------------------

# lab_start [labcloud options...]: a labcloud on 127.0.0.1, port from --port-file.
lab_start() {
	local pf
	pf=$(mktemp "$T/lab.port.XXXXXX")
	rm -f "$pf"
	"$LABCLOUD" --listen 127.0.0.1:0 --port-file "$pf" "$@" >>"$T/labcloud.log" 2>&1 &
	LAB_PID=$!
	_it_track "$LAB_PID"
	LAB_PORT=$(read_port_file "labcloud $*" "$LAB_PID" "$pf" "$T/labcloud.log") || exit 1
	LAB_URL=http://127.0.0.1:$LAB_PORT
}

lab_stop() {
	if [ -n "$LAB_PID" ]; then
		kill -TERM "$LAB_PID" 2>/dev/null
		wait "$LAB_PID" 2>/dev/null
		LAB_PID=
	fi
}

# LAB_TOKEN: the bearer token of a labcloud started with --token.
LAB_TOKEN=
_lab_curl() {
	local auth=()
	[ -n "$LAB_TOKEN" ] && auth=(-H "Authorization: Bearer $LAB_TOKEN")
	curl -sS --max-time 30 -H 'Content-Type: application/json' "${auth[@]}" "$@"
}

# lab_get PATH: GET, retried (up to 100 times) while labcloud injects a 429 or
# 5xx, so the checks see through --fail-rate / --rate-429.
lab_get() {
	local i body code
	for i in $(seq 1 100); do
		body=$(_lab_curl -w '\n%{http_code}' "$LAB_URL$1")
		code=${body##*$'\n'}
		case $code in
		429 | 5??) continue ;;
		esac
		printf '%s\n' "${body%$'\n'*}"
		return 0
	done
	echo "GET $1: labcloud kept failing" >&2
	return 1
}
lab_put() { _lab_curl -X PUT "$LAB_URL$1" -d "$2"; }
lab_post() { _lab_curl -X POST "$LAB_URL$1" -d "$2"; }
lab_delete() { _lab_curl -X DELETE "$LAB_URL$1"; }
lab_config() { lab_put /_config "$1" >/dev/null; }
lab_reset_stats() { _lab_curl -X POST "$LAB_URL/_stats/reset" >/dev/null; }
lab_wipe() { lab_delete /_objects >/dev/null; }
lab_stat() { lab_get /_stats | jq -r "$1"; }
lab_total() { lab_stat .total_objects; }

# All objects of a collection as a JSON array.
lab_items() {
	lab_get "/v1/$1" | jq -c '.items'
}

# The collections labcloud knows, or the ones given.
_lab_colls() {
	if [ $# -gt 0 ]; then
		printf '%s\n' "$@"
	else
		lab_stat '.objects | keys[]'
	fi
}

# lab_pairs [COLLECTION...]: "collection id" of every object labcloud holds
# (in the given collections only), sorted.
lab_pairs() {
	local c
	for c in $(_lab_colls "$@"); do
		lab_get "/v1/$c" | jq -r --arg c "$c" '.items[] | "\($c) \(.id)"'
	done | LC_ALL=C sort
}

# check_lab_matches_state DESC [COLLECTION...]: the same (collection, id)
# pairs on both sides (only in the given collections, if any), no id twice in
# the state, no name twice in a labcloud collection.
check_lab_matches_state() {
	local desc=$1 lab st only_lab only_state dup_state dup_names c
	shift
	lab=$(lab_pairs "$@")
	st=$(state_pairs)
	if [ $# -gt 0 ]; then
		st=$(echo "$st" | grep -E "^($(IFS='|'; echo "$*")) ")
	fi
	only_lab=$(LC_ALL=C comm -23 <(echo "$lab") <(echo "$st") | grep -v '^$')
	only_state=$(LC_ALL=C comm -13 <(echo "$lab") <(echo "$st") | grep -v '^$')
	dup_state=$(echo "$st" | grep -v '^$' | uniq -d)
	dup_names=$(for c in $(_lab_colls "$@"); do
		lab_get "/v1/$c" | jq -r --arg c "$c" '.items[] | "\($c)/\(.name)"'
	done | LC_ALL=C sort | uniq -d)
	if [ -z "$only_lab$only_state$dup_state$dup_names" ]; then
		_pass "$desc ($(echo "$lab" | grep -c .) objects)"
	else
		_fail "$desc" \
			"labcloud objects not in the state (orphans): $(echo $only_lab)" \
			"state resources not in labcloud (missing):  $(echo $only_state)" \
			"ids twice in the state: $(echo $dup_state)" \
			"names twice in a labcloud collection (duplicates): $(echo $dup_names)"
	fi
}

# A random integer in [0, $1).
rand_below() {
	echo $(((RANDOM * 32768 + RANDOM) % $1))
}

# Sleep N milliseconds.
sleep_ms() {
	sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"
}
