#!/usr/bin/env bash
# test_crash.sh - crash safety: mecorch is killed with SIGKILL at random
# moments of an apply (creates; updates after an input changed; replaces) or
# of a destroy; the next run must succeed (the dead process's lock is taken over,
# its pending intents resolved) and leave labcloud holding exactly the
# objects the state records: same ids per collection, no orphan, no
# duplicate.
#
# CRASH_TRIALS (default 24) sets the number of trials, CRASH_SEED the seed of
# the random kill times (printed, so a failing run can be replayed).
source "$(dirname "$0")/lib.sh" || exit 1

PLAN=$FIXTURES/plans/tiers.lua
TRIALS=${CRASH_TRIALS:-24}
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
TOTAL=42 # 6 networks, 18 servers, 18 records

lab_start --latency-ms 30 --fail-rate 0.02 --seed "$SEED"
V=(--var "endpoint=$LAB_URL" --var nets=6 --var servers_per_net=3 --retry-base-ms 10 --retry-max 10)
echo "seed $SEED, $TRIALS trials, labcloud $LAB_URL (30 ms latency, 2% failures)"

gen=0
dns=dns
killed_running=0
resolved=0
for trial in $(seq 1 "$TRIALS"); do
	# Cycle through four kinds of runs: create everything from an empty
	# state, update everything (a new `gen`), replace the 18 DNS records
	# (another collection: delete, then create), destroy everything.
	case $((trial % 4)) in
	1) op=apply kind="create" par=1 ;;
	2) op=apply kind="update" par=2 gen=$((gen + 1)) ;;
	3) op=apply kind="replace" par=2 dns=$([ "$dns" = dns ] && echo dns2 || echo dns) ;;
	0) op=destroy kind="destroy" par=2 ;;
	esac
	args=("$op" "$PLAN" "${V[@]}" --var "gen=g$gen" --var "dns_collection=$dns" --auto-approve)
	delay=$(rand_below 1501)
	mo_bg "$T/trial.$trial.log" "${args[@]}" --parallelism "$par"
	sleep_ms "$delay"
	_it_ours "$BG_PID" && kill -KILL "$BG_PID" 2>/dev/null
	mo_wait "$BG_PID"
	if [ "$BG_RC" = 137 ]; then
		killed_running=$((killed_running + 1))
		when="killed after ${delay} ms, labcloud holding $(lab_total) objects"
	else
		when="had finished (exit $BG_RC) before the kill at ${delay} ms"
	fi
	say "trial $trial: $kind run $when"

	mo "${args[@]}"
	check_rc "trial $trial: the $op after the kill exits 0" 0
	n=$(grep -c 'pending operation of an interrupted run resolved' "$ERR")
	resolved=$((resolved + n))
	if [ "$op" = apply ]; then
		check_lab_matches_state "trial $trial: labcloud objects == state resources"
		check_eq "trial $trial: labcloud holds all $TOTAL objects, the records in $dns" \
			"$TOTAL 18" "$(lab_total) $(lab_stat ".objects[\"$dns\"]")"
		check_eq "trial $trial: every object carries gen=g$gen" "g$gen" \
			"$(for c in networks servers "$dns"; do lab_items "$c" | jq -r '.[].gen'; done |
				sort -u | tr '\n' ' ' | sed 's/ $//')"
		mo plan "$PLAN" "${V[@]}" --var "gen=g$gen" --var "dns_collection=$dns" --detailed-exitcode
		check_rc "trial $trial: plan afterwards is empty" 0
	else
		check_eq "trial $trial: labcloud holds zero objects" 0 "$(lab_total)"
		check_eq "trial $trial: the state is empty" "" "$(state_pairs)"
	fi
done

# SIGTERM (like Ctrl-C) is not a crash: nothing new starts, the actions in
# flight finish and are recorded, the run exits 130, and the state already
# matches labcloud before any other run.
for trial in 1 2 3 4; do
	if [ $((trial % 2)) = 1 ]; then
		op=apply kind="create"
	else
		op=destroy kind="destroy"
	fi
	args=("$op" "$PLAN" "${V[@]}" --var "gen=g$gen" --var "dns_collection=$dns" --auto-approve)
	delay=$(rand_below 700)
	mo_bg "$T/term.$trial.log" "${args[@]}" --parallelism 2
	# Once it holds the lock it is past its start-up (its signal handlers
	# are in place); then a random moment of the run.
	wait_for_lock >/dev/null
	sleep_ms "$delay"
	_it_ours "$BG_PID" && kill -TERM "$BG_PID" 2>/dev/null
	mo_wait "$BG_PID"
	say "SIGTERM $trial: $kind run sent SIGTERM $delay ms after it took the lock, exit $BG_RC, labcloud holding $(lab_total) objects"
	if [ "$BG_RC" = 0 ]; then
		_pass "SIGTERM $trial: the run had finished"
	else
		check_eq "SIGTERM $trial: the interrupted run exits 130" 130 "$BG_RC"
		check_true "SIGTERM $trial: it says it was interrupted" grep -qi interrupted "$T/term.$trial.log"
	fi
	check_lab_matches_state "SIGTERM $trial: labcloud objects == state resources, before any other run"
	mo "${args[@]}"
	check_rc "SIGTERM $trial: the next $op exits 0" 0
	check_out_lacks "SIGTERM $trial: it has no pending operation to resolve" "pending operation of an interrupted run"
	check_lab_matches_state "SIGTERM $trial: labcloud objects == state resources"
done

say "$killed_running of $TRIALS kills hit a running mecorch; the next runs resolved $resolved pending operations"
check_true "at least a quarter of the kills hit a running mecorch" test "$killed_running" -ge $((TRIALS / 4))
check_true "some kills left pending operations that the next run resolved" test "$resolved" -gt 0

finish
