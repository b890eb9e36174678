#!/usr/bin/env bash
# test_crash.sh - crash safety: mecorch is killed with SIGKILL at random
# moments of an apply (creates, or updates after an input changed) or of a
# destroy; the next run must succeed (the dead process's lock is taken over,
# its pending intents resolved) and leave labcloud holding exactly the
# objects the state records: same ids per collection, no orphan, no
# duplicate.
#
# CRASH_TRIALS (default 24) sets the number of trials, CRASH_SEED the seed of
# the random kill times (printed, so a failing run can be replayed).
source "$(dirname "$0")/lib.sh"

PLAN=$FIXTURES/plans/tiers.lua
TRIALS=${CRASH_TRIALS:-24}
SEED=${CRASH_SEED:-$$}
RANDOM=$SEED
TOTAL=42 # 6 networks, 18 servers, 18 records

lab_start --latency-ms 30 --fail-rate 0.02 --seed "$SEED"
V=(--var "endpoint=$LAB_URL" --var nets=6 --var servers_per_net=3 --retry-base-ms 10 --retry-max 10)
echo "seed $SEED, $TRIALS trials, labcloud $LAB_URL (30 ms latency, 2% failures)"

gen=0
killed_running=0
resolved=0
for trial in $(seq 1 "$TRIALS"); do
	# Cycle through the three kinds of runs: create everything from an empty
	# state, update everything (a new `gen`), destroy everything.
	case $((trial % 3)) in
	1) op=apply kind="create" par=1 ;;
	2) op=apply kind="update" par=2 gen=$((gen + 1)) ;;
	0) op=destroy kind="destroy" par=2 ;;
	esac
	delay=$(rand_below 1501)
	log=$T/trial.$trial.log
	if [ "$op" = apply ]; then
		mo_bg "$log" apply "$PLAN" "${V[@]}" --var "gen=g$gen" --parallelism "$par" --auto-approve
	else
		mo_bg "$log" destroy "$PLAN" "${V[@]}" --var "gen=g$gen" --parallelism "$par" --auto-approve
	fi
	sleep_ms "$delay"
	kill -KILL "$BG_PID" 2>/dev/null
	mo_wait "$BG_PID"
	st=$BG_RC
	if [ "$st" -eq 137 ]; then
		killed_running=$((killed_running + 1))
		when="killed after ${delay} ms, labcloud holding $(lab_total) objects"
	else
		when="had finished (exit $st) before the kill at ${delay} ms"
	fi
	say "trial $trial: $kind run $when"

	mo "$op" "$PLAN" "${V[@]}" --var "gen=g$gen" --auto-approve
	check_rc "trial $trial: the $op after the kill exits 0" 0
	n=$(grep -c 'pending operation of an interrupted run resolved' "$ERR")
	resolved=$((resolved + n))
	if [ "$op" = apply ]; then
		check_lab_matches_state "trial $trial: labcloud objects == state resources"
		check_eq "trial $trial: labcloud holds all $TOTAL objects" "$TOTAL" "$(lab_total)"
		check_eq "trial $trial: every object carries gen=g$gen" "g$gen" \
			"$(for c in networks servers dns; do lab_items $c | jq -r '.[].gen'; done | sort -u | tr '\n' ' ' | sed 's/ $//')"
		mo plan "$PLAN" "${V[@]}" --var "gen=g$gen" --detailed-exitcode
		check_rc "trial $trial: plan afterwards is empty" 0
	else
		check_eq "trial $trial: labcloud holds zero objects" 0 "$(lab_total)"
		check_eq "trial $trial: the state is empty" "" "$(state_pairs)"
	fi
done

say "$killed_running of $TRIALS kills hit a running mecorch; the next runs resolved $resolved pending operations"
check_true "at least a quarter of the kills hit a running mecorch" test "$killed_running" -ge $((TRIALS / 4))
check_true "some kills left pending operations that the next run resolved" test "$resolved" -gt 0

finish
