#!/usr/bin/env bash
# test_lock.sh - the state lock: a second run fails at once (exit 5) naming
# the holder and touches nothing; `lock list` shows the lock while a run
# holds it and nothing afterwards; `lock unlock ID` releases the lock of a
# live but stuck (SIGSTOPped) holder, and the next apply adopts what the
# stuck run had in flight.
source "$(dirname "$0")/lib.sh" || exit 1

FLAT=$FIXTURES/plans/flat.lua
lab_start --latency-ms 300
ME="$(id -un)@$(uname -n)"

say "a second apply while the first is running (20 objects, parallelism 2, 3 s per request)"
# Every request takes 3 s until the checks below are done (the first apply
# must still hold the lock for all of them, however slow the machine), then
# 300 ms again.
lab_config '{"latency_ms":3000}'
mo_bg "$T/first.log" apply "$FLAT" --var "endpoint=$LAB_URL" --var count=20 --var collection=first \
	--parallelism 2 --auto-approve
FIRST=$BG_PID
lock=$(wait_for_lock)
check_true "lock list --json shows a lock while the first apply runs" test -n "$lock"
check_eq "the lock names the first apply: owner, pid, operation" "$ME $FIRST apply" \
	"$(echo "$lock" | jq -r '"\(.owner) \(.pid) \(.operation)"')"
lock_id=$(echo "$lock" | jq -r .id)
mo lock list
check_rc "lock list exits 0" 0
check_out_has "lock list shows the lock id" "$lock_id"
check_out_has "lock list shows the holder" "$ME (pid $FIRST) apply"

mo apply "$FLAT" --var "endpoint=$LAB_URL" --var count=5 --var collection=second --auto-approve
check_rc "the second apply exits 5" 5
check_out_has "the message names user@host and pid" "locked by $ME (pid $FIRST)"
check_out_has "the message names the operation" "running apply"
check_out_has "the message gives the lock id" "$lock_id"
check_true "the first apply was still running when the second gave up" kill -0 "$FIRST"
mo plan "$FLAT" --var "endpoint=$LAB_URL" --var count=5 --var collection=second
check_rc "a plan meanwhile exits 5 too" 5
mo destroy "$FLAT" --var "endpoint=$LAB_URL" --var count=20 --var collection=first --auto-approve
check_rc "a destroy meanwhile exits 5 too" 5
lab_config '{"latency_ms":300}'

mo_wait "$FIRST"
check_eq "the first apply exits 0" 0 "$BG_RC"
check_eq "labcloud: the first apply's 20 objects, none of the refused runs'" '{"first":20}' \
	"$(lab_stat .objects | jq -c .)"
mo lock list --json
check_eq "lock list --json: no lock once the first apply finished" null "$(jq -c .lock "$OUT")"
mo lock list
check_out_has "lock list says so" "not locked"
check_lab_matches_state "labcloud objects == state resources"

say "lock unlock on a lock held by a stopped apply (another state, 3 objects)"
export MECORCH_STATE=$T/held.db
lab_config '{"latency_ms":2000}'
HV=(--var "endpoint=$LAB_URL" --var count=3 --var collection=held)
mo_bg "$T/held.log" apply "$FLAT" "${HV[@]}" --parallelism 1 --auto-approve
HELD=$BG_PID
lock=$(wait_for_lock)
lock_id=$(echo "$lock" | jq -r .id)
# Stop it while its first create waits for labcloud (the intent is
# committed, no transaction is open): it holds the lock and nothing else.
in_flight_at_least() { [ "$(lab_stat .in_flight)" -ge "$1" ]; }
in_flight_none() { [ "$(lab_stat .in_flight)" -eq 0 ]; }
poll_until 60 in_flight_at_least 1
kill -STOP "$HELD"
check_eq "the stopped apply holds the lock" "$HELD" "$(echo "$lock" | jq -r .pid)"
lab_config '{"latency_ms":0}'
mo apply "$FLAT" "${HV[@]}" --auto-approve
check_rc "an apply against a live (stopped) holder exits 5" 5
mo lock unlock no-such-lock
check_rc "lock unlock of an unknown id exits 4" 4
mo lock list --json
check_eq "... and leaves the lock" "$lock_id" "$(jq -r .lock.id "$OUT")"
mo lock unlock "$lock_id"
check_rc "lock unlock ID exits 0" 0
mo lock list --json
check_eq "lock list --json: the lock is gone" null "$(jq -c .lock "$OUT")"
# The stopped run's POST is carried out by labcloud 2 s after it was sent.
poll_until 60 in_flight_none
mo apply "$FLAT" "${HV[@]}" --auto-approve
check_rc "the next apply takes the lock and exits 0" 0
check_out_has "it adopts the object the stopped run's create made" \
	"module.flat.object.o0001: pending operation of an interrupted run resolved (adopted"
check_out_has "and creates the other two" "2 created"
# Resume the stopped run: its lock is gone, so its next journal write
# fails and it writes nothing more (no duplicate, no second adoption).
kill -CONT "$HELD"
mo_wait "$HELD"
check_eq "the resumed run exits 5 (locked)" 5 "$BG_RC"
check_true "... saying its lock is no longer held" grep -q "lock is no longer held" "$T/held.log"
check_eq "labcloud: 20 + 3 objects, no duplicate" '{"first":20,"held":3}' "$(lab_stat .objects | jq -c .)"
check_lab_matches_state "labcloud objects == state resources (collection held)" held
mo lock list --json
check_eq "no lock is left" null "$(jq -c .lock "$OUT")"

say "a lease that expires at the confirmation prompt: the other writer wins, nothing is applied"
# A plans (lease 5 s) and waits at the prompt on a terminal; once its lease
# has run out, B takes the lock over and applies; then A is told "yes" and
# must refuse, since its plan is stale and the lock is B's.
export MECORCH_STATE=$T/prompt.db
PV=(--var "endpoint=$LAB_URL" --var count=1 --var collection=prompt)
mkfifo "$T/prompt.in"
exec 7<>"$T/prompt.in"
(
	script -qfec "'$MECORCH' apply '$FLAT' ${PV[*]} --var gen=A --lease-seconds 5" /dev/null \
		<"$T/prompt.in" >"$T/prompt.out" 2>&1
	echo $? >"$T/prompt.rc"
) &
PROMPT_SUB=$!
at_prompt() { grep -q "Only 'yes' will be accepted" "$T/prompt.out" 2>/dev/null; }
poll_until 60 at_prompt
lease_expired() {
	"$MECORCH" lock list --json --state "$MECORCH_STATE" >"$T/prompt.lock" 2>/dev/null &&
		[ "$(jq -r '.lock.expires' "$T/prompt.lock")" -lt "$(date +%s)" ]
}
poll_until 60 lease_expired
mo apply "$FLAT" "${PV[@]}" --var gen=B --auto-approve
check_rc "B takes over the expired lock and applies: exit 0" 0
echo yes >&7
wait "$PROMPT_SUB"
exec 7>&-
check_eq "A, told yes after losing its lock, exits 5" 5 "$(cat "$T/prompt.rc")"
check_true "... saying nothing was applied" grep -q "nothing was applied" "$T/prompt.out"
check_eq "labcloud holds B's object" B "$(lab_items prompt | jq -r '.[0].gen')"

finish
