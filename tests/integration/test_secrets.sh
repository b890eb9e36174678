#!/usr/bin/env bash
# test_secrets.sh - a sensitive variable that changes (a rotated password):
# no value it ever had appears in clear in any output, the state (and its
# WAL), a saved plan or a refresh, and a refresh with yet another value
# reports no drift where the peer still holds the stored one.  An output
# built from a secret is treated as sensitive although not declared so.
source "$(dirname "$0")/lib.sh" || exit 1

PLAN=$FIXTURES/plans/rotate.lua
lab_start
export MECORCH_STATE=$T/rotate.db
V=(--var "endpoint=$LAB_URL")
S1=FirstSecret-5k2j
S2=SecondSecret-q8w1
S3=ThirdSecret-z0p4

# leaks DESC SECRET...: no file of the run holds any of the secrets.
leaks() {
	local desc=$1 f s n total=0
	shift
	for f in "$OUT" "$ERR" "$MECORCH_STATE" "$MECORCH_STATE-wal" "$T"/*.plan; do
		[ -e "$f" ] || continue
		for s in "$@"; do
			n=$(grep -ac -- "$s" "$f")
			total=$((total + n))
		done
	done
	check_eq "$desc" 0 "$total"
}

say "apply with pw=S1"
mo apply "$PLAN" "${V[@]}" --var "pw=$S1" --auto-approve
check_rc "apply exits 0" 0
check_eq "labcloud holds the password (the peer must get it)" "$S1" "$(lab_items db | jq -r '.[0].password')"
leaks "S1 is nowhere in apply's output or the state" "$S1"
check_out_has "the output built from pw is shown as sensitive" "conn = (sensitive)"
mo output --json
check_rc "output --json exits 0" 0
check_eq "output --json: conn is sensitive" true "$(jq -r '.conn.sensitive' "$OUT")"
leaks "S1 is not in output --json" "$S1"

say "rotate: apply with pw=S2"
mo plan "$PLAN" "${V[@]}" --var "pw=$S2" --out "$T/rotate.plan"
check_rc "plan --out exits 0" 0
leaks "neither S1 nor S2 in the plan's output or the saved plan" "$S1" "$S2"
mo apply "$T/rotate.plan" --var "pw=$S2" --auto-approve
check_rc "apply of the saved plan exits 0" 0
check_eq "labcloud holds the new password" "$S2" "$(lab_items db | jq -r '.[0].password')"
leaks "neither S1 nor S2 anywhere after the rotation" "$S1" "$S2"

say "refresh and plan with a third value while the peer still holds S2"
mo refresh "$PLAN" "${V[@]}" --var "pw=$S3"
check_rc "refresh exits 0" 0
check_out_has "refresh reports no drift (the peer's value hashes as the state's)" "No drift"
leaks "S2 is not stored in clear by the refresh (nor S3)" "$S1" "$S2" "$S3"
rm -f "$T/rotate.plan"
mo plan "$PLAN" "${V[@]}" --var "pw=$S3" --out "$T/rotate3.plan"
check_rc "plan exits 0" 0
check_out_has "the plan updates the object" "1 to change"
leaks "no secret in the plan's before/after or the saved plan" "$S1" "$S2" "$S3"
mo plan "$PLAN" "${V[@]}" --var "pw=$S3" --json
leaks "no secret in plan --json" "$S1" "$S2" "$S3"
check_eq "plan --json: the output built from pw is sensitive" true \
	"$(jq -r 'select(.output_changes) | .output_changes.conn.sensitive' "$OUT")"

say "destroy"
mo destroy "$PLAN" "${V[@]}" --var "pw=$S3" --auto-approve
check_rc "destroy exits 0" 0
check_eq "labcloud is empty" 0 "$(lab_total)"
leaks "no secret in the end" "$S1" "$S2" "$S3"

finish
