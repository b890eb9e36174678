#!/usr/bin/env bash
# test_lifecycle.sh - the life of one deployment against labcloud: apply,
# an empty plan after it, a change of one input that updates exactly one
# object, saved plans (applied as saved; refused once the state moved on),
# outputs, and destroy leaving labcloud and the state empty.
source "$(dirname "$0")/lib.sh" || exit 1

PLAN=$FIXTURES/plans/tiers.lua
lab_start
V=(--var "endpoint=$LAB_URL")

# n1-s1's "version" and "tweak" as labcloud holds them, and the versions of
# all the other objects (sorted, unique).
n1s1() { lab_items servers | jq -r '.[] | select(.name == "n1-s1") | "\(.version) \(.tweak)"'; }
other_versions() {
	for c in networks servers dns; do
		lab_items "$c" | jq -r --arg c "$c" '.[] | select($c != "servers" or .name != "n1-s1") | .version'
	done | sort -u | tr '\n' ' '
}

say "apply tiers.lua (1 network, 3 servers, 3 DNS records)"
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
check_out_has "the summary counts 7 creates" "7 created, 0 updated"
check_eq "labcloud holds 7 objects" 7 "$(lab_total)"
check_lab_matches_state "labcloud objects == state resources"

say "plan right after apply is empty"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "plan --detailed-exitcode exits 0" 0

say "outputs"
mo output --json
check_rc "output --json exits 0" 0
net_id=$(lab_items networks | jq -r '.[0].id')
check_eq "output network_id is labcloud's network id" "$net_id" "$(jq -r '.network_id.value' "$OUT")"
check_eq "output server_ids maps the 3 servers to labcloud's ids" \
	"$(lab_items servers | jq -cS 'map({(.name): .id}) | add')" \
	"$(jq -cS '.server_ids.value' "$OUT")"
check_eq "output gen" '"g0"' "$(jq -c '.gen.value' "$OUT")"
mo output network_id
check_rc "output NAME exits 0" 0
check_out_has "output NAME prints the value" "$net_id"
mo output no_such_output
check_rc "output of an unknown name exits 4" 4

say "change one input of one resource"
mo plan "$PLAN" "${V[@]}" --var tweak=t1 --json
check_rc "plan --json exits 0" 0
changes=$(jq -r 'select(.resource_changes) | .resource_changes[]
	| select(.change.actions != ["no-op"]) | "\(.address) \(.change.actions | join(","))"' "$OUT")
check_eq "plan --json shows exactly one update" "module.servers.object.n1-s1 update" "$changes"
check_eq "plan --json lists all 7 resources" 7 \
	"$(jq -r 'select(.resource_changes) | .resource_changes | length' "$OUT")"
mo plan "$PLAN" "${V[@]}" --var tweak=t1 --detailed-exitcode
check_rc "plan --detailed-exitcode exits 2 with a change pending" 2
mo apply "$PLAN" "${V[@]}" --var tweak=t1 --auto-approve
check_rc "apply of the change exits 0" 0
check_out_has "the summary counts 1 update" "0 created, 1 updated, 0 replaced, 0 destroyed"
check_eq "labcloud: n1-s1 at version 2 with the new value" "2 t1" "$(n1s1)"
check_eq "labcloud: every other object still at version 1" "1 " "$(other_versions)"
check_lab_matches_state "labcloud objects == state resources after the update"
mo plan "$PLAN" "${V[@]}" --var tweak=t1 --detailed-exitcode
check_rc "plan after the update is empty" 0

say "saved plan: plan --out F, apply F"
mo plan "$PLAN" "${V[@]}" --var tweak=t2 --out "$T/t2.plan"
check_rc "plan --out exits 0" 0
check_true "the saved plan file exists" test -s "$T/t2.plan"
check_eq "plan --out changes nothing in labcloud" "2 t1" "$(n1s1)"
mo show "$T/t2.plan"
check_rc "show SAVED_PLAN exits 0" 0
check_out_has "show SAVED_PLAN names the update" "module.servers.object.n1-s1"
mo apply "$T/t2.plan" --auto-approve
check_rc "apply F exits 0" 0
check_eq "labcloud: n1-s1 at version 3 with the saved plan's value" "3 t2" "$(n1s1)"
check_eq "labcloud: every other object still at version 1" "1 " "$(other_versions)"
mo apply "$T/t2.plan" --auto-approve
check_rc "applying the same saved plan twice is refused with exit 6" 6
check_eq "the refused apply changed nothing" "3 t2" "$(n1s1)"

say "saved plan made stale by another apply"
mo plan "$PLAN" "${V[@]}" --var tweak=t3 --out "$T/t3.plan"
check_rc "plan --out exits 0" 0
mo apply "$PLAN" "${V[@]}" --var tweak=t4 --auto-approve
check_rc "another apply in between exits 0" 0
mo apply "$T/t3.plan" --auto-approve
check_rc "apply of the stale saved plan exits 6" 6
check_out_has "the refusal says why" "the state changed since the plan was saved"
check_eq "labcloud still holds the in-between apply's value" "4 t4" "$(n1s1)"
check_lab_matches_state "labcloud objects == state resources"

say "saved plan made stale by a change of the plan file"
sed "s|\"../../../iac-modules/lab/generic\"|\"$GENERIC\"|" "$PLAN" >"$T/tiers.lua"
mo plan "$T/tiers.lua" "${V[@]}" --var tweak=t4 --detailed-exitcode
check_rc "a copy of the plan plans the same (no change)" 0
mo plan "$T/tiers.lua" "${V[@]}" --var tweak=t5 --out "$T/t5.plan"
check_rc "plan --out exits 0" 0
sed -i 's|"10." .. i .. ".0.0/24"|"10." .. i .. ".99.0/24"|' "$T/tiers.lua"
check_true "(the copy was edited)" grep -q '99.0/24' "$T/tiers.lua"
mo apply "$T/t5.plan" --auto-approve
check_rc "apply of a saved plan whose plan file changed exits 6" 6
check_eq "labcloud still holds the previous value" "4 t4" "$(n1s1)"

say "destroy"
mo destroy "$PLAN" "${V[@]}" --auto-approve
check_rc "destroy exits 0" 0
check_out_has "the summary counts 7 destroys" "7 destroyed"
check_eq "labcloud holds zero objects" 0 "$(lab_total)"
mo state list
check_rc "state list exits 0" 0
check_eq "state list is empty" "" "$(cat "$OUT")"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "plan after destroy has changes pending (exit 2)" 2
mo output --json
check_eq "no outputs are left after destroy" "{}" "$(jq -c . "$OUT" 2>/dev/null)"

finish
