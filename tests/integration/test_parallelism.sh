#!/usr/bin/env bash
# test_parallelism.sh - --parallelism is the exact bound of actions in flight:
# 200 independent objects, labcloud holding every request 500 ms, so the
# bound is reached and labcloud's max_in_flight shows it.  (Reaching it
# takes starting 40 requests within one request's latency: 500 ms keeps
# that true on a slow, loaded machine.)
source "$(dirname "$0")/lib.sh" || exit 1

FLAT=$FIXTURES/plans/flat.lua
lab_start --latency-ms 500
V=(--var "endpoint=$LAB_URL" --var count=200)

say "apply --parallelism 16 on an empty state"
lab_reset_stats
mo apply "$FLAT" "${V[@]}" --parallelism 16 --auto-approve
check_rc "apply exits 0" 0
check_eq "labcloud holds 200 objects" 200 "$(lab_total)"
check_eq "max_in_flight == 16" 16 "$(lab_stat .max_in_flight)"
check_eq "200 POSTs and no other request (an empty state needs no reads)" \
	'{"DELETE":0,"GET":0,"HEAD":0,"OTHER":0,"PATCH":0,"POST":200,"PUT":0}' \
	"$(lab_stat '.requests | to_entries | sort_by(.key) | from_entries' | jq -c .)"
check_lab_matches_state "labcloud objects == state resources"

say "plan --parallelism 25: the refresh reads are bounded too"
lab_reset_stats
mo plan "$FLAT" "${V[@]}" --parallelism 25 --detailed-exitcode
check_rc "plan is empty (exit 0)" 0
check_eq "max_in_flight == 25" 25 "$(lab_stat .max_in_flight)"
check_eq "200 GETs" 200 "$(lab_stat .requests.GET)"

say "destroy --parallelism 40"
lab_reset_stats
mo destroy "$FLAT" "${V[@]}" --parallelism 40 --auto-approve
check_rc "destroy exits 0" 0
check_eq "labcloud holds zero objects" 0 "$(lab_total)"
check_eq "max_in_flight == 40" 40 "$(lab_stat .max_in_flight)"
check_eq "200 DELETEs" 200 "$(lab_stat .requests.DELETE)"
check_eq "the state is empty" "" "$(state_pairs)"

finish
