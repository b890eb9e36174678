#!/usr/bin/env bash
# test_faults.sh - failures on the way: labcloud answering 5xx and 429
# (with Retry-After) to a large share of requests, requests timing out after
# labcloud acted on them, a module handler raising an error (it fails its
# dependents, not its siblings), and --fail-fast.
source "$(dirname "$0")/lib.sh" || exit 1

TIERS=$FIXTURES/plans/tiers.lua
FLAT=$FIXTURES/plans/flat.lua
CHAINS=$FIXTURES/plans/chains.lua
FAILFAST=$FIXTURES/plans/failfast.lua
# Fast, persistent retries: the labcloud failures below are frequent (with
# 44% of attempts failing, 30 retries leave one request in 10^10 failing).
RETRY=(--retry-base-ms 10 --retry-max 30)

say "5xx and 429: labcloud --fail-rate 0.3 --rate-429 0.2 --retry-after 1"
lab_start --fail-rate 0.3 --rate-429 0.2 --retry-after 1 --seed 42
V=(--var "endpoint=$LAB_URL" --var nets=6 --var servers_per_net=2)
mo apply "$TIERS" "${V[@]}" "${RETRY[@]}" --auto-approve
check_rc "apply of 30 resources exits 0" 0
check_out_has "the summary counts 30 creates and no failure" "30 created, 0 updated, 0 replaced, 0 destroyed, 0 failed"
check_eq "labcloud holds 30 objects" 30 "$(lab_total)"
check_lab_matches_state "labcloud objects == state resources"
n5xx=$(lab_stat '(.responses["500"] // 0) + (.responses["503"] // 0)')
n429=$(lab_stat '.responses["429"] // 0')
check_true "labcloud answered 5xx ($n5xx) and 429 ($n429): the faults were there" \
	test "$n5xx" -gt 0 -a "$n429" -gt 0
mo plan "$TIERS" "${V[@]}" "${RETRY[@]}" --detailed-exitcode
check_rc "plan (reads retried through the same faults) is empty" 0
mo destroy "$TIERS" "${V[@]}" "${RETRY[@]}" --auto-approve
check_rc "destroy through the faults exits 0" 0
check_eq "labcloud holds zero objects" 0 "$(lab_total)"
check_eq "the state is empty" "" "$(state_pairs)"

say "timeouts: labcloud acts on requests the client gave up on (jitter 0-300 ms, --http-timeout-ms 200)"
# A third of the attempts outlast the timeout by design; a slow machine's
# longer round trips add to that share, which the 30 retries absorb.
lab_config '{"fail_rate":0,"rate_429":0,"latency_ms":0,"latency_jitter_ms":300}'
lab_reset_stats
V=(--var "endpoint=$LAB_URL" --var count=30 --var collection=timeouts)
mo apply "$FLAT" "${V[@]}" "${RETRY[@]}" --http-timeout-ms 200 --auto-approve
check_rc "apply of 30 objects exits 0" 0
npost=$(lab_stat .requests.POST)
check_true "POSTs were retried after timeouts ($npost POSTs for 30 objects)" test "$npost" -gt 30
check_eq "labcloud holds exactly 30 objects: a retried create made no second object" 30 "$(lab_total)"
check_lab_matches_state "labcloud objects == state resources"
mo destroy "$FLAT" "${V[@]}" "${RETRY[@]}" --http-timeout-ms 200 --auto-approve
check_rc "destroy with timeouts exits 0" 0
check_eq "labcloud holds zero objects" 0 "$(lab_total)"
lab_config '{"latency_jitter_ms":0}'

say "a handler error fails its dependents only (chains.lua: A's middle object 'bad' fails)"
lab_wipe
rm -f "$MECORCH_STATE"
V=(--var "endpoint=$LAB_URL")
mo apply "$CHAINS" "${V[@]}" --auto-approve --json
check_rc "apply exits 1" 1
summary=$(jq -c 'select(.type == "summary") | [.created, .failed, .skipped]' "$OUT")
check_eq "summary: 8 created, 1 failed, 1 not applied" "[8,1,1]" "$summary"
line=$(grep -n 'error("injected failure' "$FIXTURES/modules/faulty/module.lua" | cut -d: -f1)
check_eq "the error names the resource, the module, file:line and the message" \
	"module.a_srv.object.bad create(): module a_srv: module.lua:$line: injected failure creating bad" \
	"$(jq -r 'select(.type == "summary") | .errors[0].message' "$OUT")"
check_eq "the error carries a traceback" true \
	"$(jq -r 'select(.type == "summary") | .errors[0].traceback | test("stack traceback")' "$OUT")"
check_eq "only the failed object's dependent is skipped" "module.a_dns.object.bad" \
	"$(jq -r 'select(.type == "skip") | .address' "$OUT")"
check_eq "the skip event names the action that was not applied" "create" \
	"$(jq -r 'select(.type == "skip") | .action' "$OUT")"
check_eq "labcloud per collection: chain A without 'bad' and its record, chain B whole" \
	'{"a-dns":1,"a-net":1,"a-srv":1,"b-dns":2,"b-net":1,"b-srv":2}' \
	"$(lab_stat '.objects | to_entries | sort_by(.key) | from_entries' | jq -c .)"
check_eq "chain A's surviving record is the good one" good "$(lab_items a-dns | jq -r '.[].name')"
check_lab_matches_state "labcloud objects == state resources"
mo apply "$CHAINS" "${V[@]}" --auto-approve
check_rc "the same apply again still fails (exit 1)" 1
check_out_has "and creates nothing twice" "0 created, 0 updated, 0 replaced, 0 destroyed, 1 failed, 1 not applied"
mo apply "$CHAINS" "${V[@]}" --var 'fail=[]' --auto-approve
check_rc "apply without the failure exits 0" 0
check_out_has "it creates the two missing objects" "2 created, 0 updated"
check_eq "labcloud holds all 10 objects" 10 "$(lab_total)"
check_lab_matches_state "labcloud objects == state resources"

say "--fail-fast: nothing starts after the first failure (failfast.lua, labcloud latency 300 ms)"
lab_wipe
rm -f "$MECORCH_STATE"
lab_config '{"latency_ms":300}'
mo apply "$FAILFAST" "${V[@]}" --fail-fast --auto-approve --json
check_rc "apply --fail-fast exits 1" 1
after_error=$(jq -r 'select(.type == "start" or .type == "error") | .type' "$OUT" |
	sed -n '/^error$/,$p' | grep -c '^start$')
check_eq "no action starts after the first error" 0 "$after_error"
check_eq "no level-2 action starts" "" \
	"$(jq -r 'select(.type == "start" and (.address | startswith("module.l2."))) | .address' "$OUT")"
started_ok=$(jq -r 'select(.type == "ok") | .address' "$OUT" | sort | tr '\n' ' ')
check_eq "actions in flight at the failure finished and were recorded" "$started_ok" \
	"$("$MECORCH" state list | sort | tr '\n' ' ')"
check_eq "summary: created + failed + not applied = all 9" 9 \
	"$(jq -r 'select(.type == "summary") | .created + .failed + .skipped' "$OUT")"
check_eq "labcloud holds no level-2 object" 0 "$(lab_stat '.objects.l2 // 0')"
check_lab_matches_state "labcloud objects == state resources"
mo apply "$FAILFAST" "${V[@]}" --auto-approve --json
check_rc "the same apply without --fail-fast exits 1" 1
check_eq "without --fail-fast the level-2 objects are created" 4 "$(lab_stat '.objects.l2 // 0')"
check_lab_matches_state "labcloud objects == state resources"

finish
