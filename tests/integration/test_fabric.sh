#!/usr/bin/env bash
# test_fabric.sh - iac-modules/interconnect/fabric against the fabric
# emulator (examples/lab/fabric.c): connections provisioned asynchronously
# (PENDING seen before PROVISIONED), an empty plan after apply, drift made
# with curl, a bandwidth update, a VLAN change that replaces, the
# provider's validation (400/409/422), a provisioning that FAILS (a clear
# error, then a replace), a bandwidth change that fails, retries under
# injected 5xx/429, the provider killed mid-apply and restarted (the next
# apply adopts what the lost POST made), deletes, and bearer tokens kept
# out of the state.
source "$(dirname "$0")/lib.sh"

FABRIC=${FABRIC:-$(dirname "$MECORCH")/fabric}
MODULE=$MO_SOURCE_DIR/iac-modules/interconnect/fabric
if [ ! -x "$FABRIC" ]; then
	echo "missing binary $FABRIC (build the fabric target, or set FABRIC)" >&2
	exit 1
fi

FB_PID=
FB_PORT=
FB_URL=
FB_LOG=$T/fabric.log
FB_STATE=$T/fabric.state
FB_AUTH=()

# fb_start [fabric options...]: the provider on 127.0.0.1 (emu_start; on
# $FB_PORT again when set: a restart), its connections kept in $FB_STATE.
fb_start() {
	emu_start fabric "$FB_PORT" "$FB_LOG" "$FABRIC" --state-file "$FB_STATE" "$@"
	FB_PID=$EMU_PID
	FB_PORT=$EMU_PORT
	FB_URL=http://127.0.0.1:$FB_PORT
}

fb_curl() { curl -sS --max-time 30 "${FB_AUTH[@]}" -H 'Content-Type: application/json' "$@"; }
fb_stat() { fb_curl "$FB_URL/_stats" | jq -r "$1"; }
fb_config() { fb_curl -X PUT "$FB_URL/_config" -d "$1" >/dev/null; }
fb_conns() { fb_curl "$FB_URL/v1/connections" | jq -c '.items'; }
# "state bandwidth a_vlan z_vlan" of the connection named $1 (empty when none).
fb_conn() {
	fb_conns | jq -r --arg n "$1" \
		'.[] | select(.name == $n) | "\(.state) \(.bandwidth_mbps) \(.a_side.vlan) \(.z_side.vlan)"'
}
fb_id() { fb_conns | jq -r --arg n "$1" '.[] | select(.name == $n) | .id'; }
# Wait (up to 60 s) until no connection is PENDING or DEPROVISIONING.
_fb_settled() {
	[ "$(fb_conns | jq '[.[] | select(.state == "PENDING" or .state == "DEPROVISIONING")] | length')" = 0 ]
}
fb_settle() {
	poll_until 60 _fb_settled
}

# has DESC TEXT: the last `mo`'s stdout or stderr contains TEXT.
has() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

# check_state_matches DESC: the connections the state records are exactly
# the provider's (name and id), and no name is there twice.
check_state_matches() {
	local st em
	st=$("$MECORCH" show --json </dev/null | jq -r 'select(.type == "connection") |
		"\(.props.name) \(.id)"' | LC_ALL=C sort)
	em=$(fb_conns | jq -r '.[] | "\(.name) \(.id)"' | LC_ALL=C sort)
	if [ "$st" = "$em" ] && [ -z "$(echo "$em" | cut -d' ' -f1 | uniq -d)" ]; then
		_pass "$1 ($(echo "$em" | grep -c .) connections)"
	else
		_fail "$1" "state:    $(echo $st)" "provider: $(echo $em)"
	fi
}

PLAN=$T/fabric-plan.lua
cat >"$PLAN" <<EOF
-- Connections between the lab's four ports: web (port-1 <-> port-2),
-- backup (port-3 <-> port-4) and, when asked, dr and late.
local endpoint = variable("endpoint", { type = "string" })
local token = variable("token", { type = "string", default = "", sensitive = true })
local web_bw = variable("web_bw", { type = "integer", default = 1000 })
local web_vlan = variable("web_vlan", { type = "integer", default = 100 })
local with_backup = variable("with_backup", { type = "boolean", default = true })
local with_dr = variable("with_dr", { type = "boolean", default = false })
local with_late = variable("with_late", { type = "boolean", default = false })

local conns = {
  web = { a_side = { port_id = "port-1", vlan = web_vlan },
          z_side = { port_id = "port-2", vlan = 200 }, bandwidth_mbps = web_bw },
}
if with_backup then
  conns.backup = { a_side = { port_id = "port-3", vlan = 300 },
                   z_side = { port_id = "port-4", vlan = 400 }, bandwidth_mbps = 500 }
end
if with_dr then
  conns.dr = { a_side = { port_id = "port-1", vlan = 110 },
               z_side = { port_id = "port-4", vlan = 410 }, bandwidth_mbps = 200 }
end
if with_late then
  conns.late = { a_side = { port_id = "port-2", vlan = 120 },
                 z_side = { port_id = "port-3", vlan = 320 }, bandwidth_mbps = 100 }
end
local ic = module("ic", {
  source = "$MODULE",
  inputs = {
    endpoint = endpoint,
    token = token ~= "" and token or nil,
    connections = conns,
    timeout_s = 120,
    poll_interval_ms = 50,
  },
})
output("ids", ic.ids)
EOF

say "start the provider: 4 ports of 10 Gb/s; provisioning takes 400 ms, deprovisioning 300 ms"
fb_start --ports 4 --provision-delay-ms 400 --deprovision-delay-ms 300
V=(--var "endpoint=$FB_URL")
check_eq "the provider lists 4 ports" 4 "$(fb_curl "$FB_URL/v1/ports" | jq '.count')"

say "apply: two connections"
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
has "2 created" "2 created, 0 updated"
check_eq "web is PROVISIONED: 1000 Mbps, vlans 100/200" "PROVISIONED 1000 100 200" "$(fb_conn web)"
check_eq "backup is PROVISIONED" "PROVISIONED 500 300 400" "$(fb_conn backup)"
check_true "the module saw the connections PENDING before they were PROVISIONED (served.PENDING > 0)" \
	test "$(fb_stat .served.PENDING)" -gt 0
check_eq "the provider moved both PENDING -> PROVISIONED" 2 "$(fb_stat '.transitions["PENDING->PROVISIONED"]')"
web_id=$(fb_id web)
check_true "the provider log shows web created PENDING, then PROVISIONED" \
	test "$(grep -n "$web_id (web): created PENDING" "$FB_LOG" | cut -d: -f1)" -lt \
	"$(grep -n "$web_id (web): PENDING -> PROVISIONED" "$FB_LOG" | cut -d: -f1)"
check_state_matches "state == provider"
mo output --json
check_eq "output ids maps names to the provider's ids" "$web_id" "$(jq -r '.ids.value.web' "$OUT")"

say "plan right after apply is empty"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "plan --detailed-exitcode exits 0" 0

say "drift: web's bandwidth changed behind mecorch's back"
fb_curl -X PATCH "$FB_URL/v1/connections/$web_id" -d '{"bandwidth_mbps":700}' >/dev/null
fb_settle
mo refresh "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "refresh --detailed-exitcode exits 2 (drift)" 2
has "drift names web's bandwidth" 'module.ic.connection.web: changed ["bandwidth_mbps"]'
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply puts it back" 0
has "1 updated" "0 created, 1 updated"
check_eq "web at 1000 Mbps again, same connection" "PROVISIONED 1000 100 200 $web_id" \
	"$(fb_conn web) $(fb_id web)"

say "update: web to 2000 Mbps (re-provisioned in place)"
fb_curl -X POST "$FB_URL/_stats/reset" >/dev/null
mo apply "$PLAN" "${V[@]}" --var web_bw=2000 --auto-approve
check_rc "apply exits 0" 0
has "exactly 1 update" "0 created, 1 updated, 0 replaced, 0 destroyed"
check_eq "web at 2000 Mbps, same connection" "PROVISIONED 2000 100 200 $web_id" "$(fb_conn web) $(fb_id web)"
check_eq "the change went through PENDING" 1 "$(fb_stat '.transitions["PROVISIONED->PENDING"]')"
check_true "... and the module polled it while PENDING" test "$(fb_stat .served.PENDING)" -gt 0
V2=(--var web_bw=2000)
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --detailed-exitcode
check_rc "plan after it is empty" 0

say "replace: a VLAN cannot change on a live connection"
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --var web_vlan=101 --detailed-exitcode
check_rc "plan shows changes" 2
has "web must be replaced" "module.ic.connection.web must be replaced (a_side changed (replace_on))"
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var web_vlan=101 --auto-approve
check_rc "apply exits 0" 0
has "1 replaced" "0 created, 0 updated, 1 replaced, 0 destroyed"
new_web=$(fb_id web)
check_eq "web is a new connection on vlan 101" "PROVISIONED 2000 101 200" "$(fb_conn web)"
check_true "with a new id" test "$new_web" != "$web_id"
code=$(fb_curl -o /dev/null -w '%{http_code}' "$FB_URL/v1/connections/$web_id")
check_eq "the old connection is gone (404)" 404 "$code"
check_true "it was deprovisioned before its replacement was created" \
	test "$(grep -n "$web_id (web): DEPROVISIONING -> GONE" "$FB_LOG" | cut -d: -f1)" -lt \
	"$(grep -n "$new_web (web): created PENDING" "$FB_LOG" | cut -d: -f1)"
V2=(--var web_bw=2000 --var web_vlan=101)
check_state_matches "state == provider"

say "the provider's validation"
post() { fb_curl -X POST "$FB_URL/v1/connections" -d "$1" -w '\n%{http_code}'; }
resp=$(post '{"name":"x","a_side":{"port_id":"port-1","vlan":5000},"z_side":{"port_id":"port-2","vlan":7},"bandwidth_mbps":10}')
check_eq "VLAN 5000: 400 INVALID_VLAN" "400 INVALID_VLAN" "${resp##*$'\n'} $(echo "${resp%$'\n'*}" | jq -r .code)"
resp=$(post '{"name":"x","a_side":{"port_id":"port-1","vlan":101},"z_side":{"port_id":"port-2","vlan":7},"bandwidth_mbps":10}')
check_eq "web's VLAN on port-1: 409 VLAN_IN_USE naming web" "409 VLAN_IN_USE $new_web" \
	"${resp##*$'\n'} $(echo "${resp%$'\n'*}" | jq -r '"\(.code) \(.connection_id)"')"
check_eq "... as problem+json" "application/problem+json" \
	"$(fb_curl -o /dev/null -w '%{content_type}' -X POST "$FB_URL/v1/connections" \
	-d '{"name":"x","a_side":{"port_id":"port-1","vlan":101},"z_side":{"port_id":"port-2","vlan":7},"bandwidth_mbps":10}')"
resp=$(post '{"name":"x","a_side":{"port_id":"port-1","vlan":9},"z_side":{"port_id":"port-2","vlan":7},"bandwidth_mbps":20000}')
check_eq "20 Gb/s on 10 Gb/s ports: 422" "422 BANDWIDTH_EXCEEDS_PORT_SPEED" \
	"${resp##*$'\n'} $(echo "${resp%$'\n'*}" | jq -r .code)"
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var web_bw=20000 --auto-approve
check_rc "apply of 20 Gb/s fails" 1
has "the error quotes the provider" "BANDWIDTH_EXCEEDS_PORT_SPEED: bandwidth_mbps 20000 exceeds the speed"
check_eq "web unchanged" "PROVISIONED 2000 101 200" "$(fb_conn web)"
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --detailed-exitcode
check_rc "plan with the old bandwidth is empty again" 0

say "provisioning FAILS: a clear error naming the connection, then a replace"
fb_config '{"provision_fail_rate":1}'
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var with_dr=true --auto-approve
check_rc "apply exits 1" 1
dr_id=$(fb_id dr)
has "the error names the connection and quotes the provider" \
	"connection dr ($dr_id) failed to provision: provisioning failed: no capacity between port-1 vlan 110 and port-4 vlan 410"
check_eq "the provider holds dr FAILED" "FAILED 200 110 410" "$(fb_conn dr)"
fb_config '{"provision_fail_rate":0}'
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --var with_dr=true --detailed-exitcode
check_rc "the next plan shows a change" 2
has "the FAILED connection is adopted and replaced" "module.ic.connection.dr must be replaced (state changed (replace_on))"
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var with_dr=true --auto-approve
check_rc "apply exits 0" 0
check_eq "dr is PROVISIONED" "PROVISIONED 200 110 410" "$(fb_conn dr)"
check_true "as a new connection" test "$(fb_id dr)" != "$dr_id"
check_eq "no FAILED connection left" 0 "$(fb_stat .connections.FAILED)"
check_state_matches "state == provider"
V2=(--var web_bw=2000 --var web_vlan=101 --var with_dr=true)

say "a bandwidth change that fails: the provider keeps the old one; the error says so"
fb_config '{"provision_fail_rate":1}'
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var web_bw=3000 --auto-approve
check_rc "apply exits 1" 1
has "the error names the connection and the change" "connection web ($new_web): the change to 3000 Mbps failed: bandwidth change to 3000 Mbps failed"
check_eq "web kept 2000 Mbps" "PROVISIONED 2000 101 200" "$(fb_conn web)"
fb_config '{"provision_fail_rate":0}'
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var web_bw=3000 --auto-approve
check_rc "the next apply makes the change" 0
check_eq "web at 3000 Mbps" "PROVISIONED 3000 101 200" "$(fb_conn web)"
V2=(--var web_bw=3000 --var web_vlan=101 --var with_dr=true)

say "injected failures: 25% 500/503 and 10% 429; creates carry an Idempotency-Key"
fb_curl -X POST "$FB_URL/_stats/reset" >/dev/null
fb_config '{"fail_rate":0.25,"rate_429":0.1,"retry_after":0}'
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var web_bw=2500 --var with_late=true \
	--retry-max 12 --retry-base-ms 5 --auto-approve
check_rc "apply exits 0 despite the failures" 0
has "1 created, 1 updated" "1 created, 1 updated"
check_true "the provider answered some requests 5xx or 429" \
	test "$(fb_stat '[.responses["500"], .responses["503"], .responses["429"]] | map(. // 0) | add')" -gt 0
fb_config '{"fail_rate":0,"rate_429":0}'
check_eq "web at 2500 Mbps" "PROVISIONED 2500 101 200" "$(fb_conn web)"
check_eq "late PROVISIONED, once" "PROVISIONED 100 120 320" "$(fb_conn late)"
check_state_matches "state == provider"
V2=(--var web_bw=2500 --var web_vlan=101 --var with_dr=true --var with_late=true)
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --detailed-exitcode
check_rc "plan after it is empty" 0

say "the provider is killed while mecorch waits for a new connection, then restarted"
fb_config '{"provision_delay_ms":2500}'
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var with_late=false --auto-approve
check_rc "late removed first" 0
fb_settle
lates_before=$(grep -c '(late): created PENDING' "$FB_LOG")
mo_bg "$T/bg.log" apply "$PLAN" "${V[@]}" "${V2[@]}" --retry-max 1 --retry-base-ms 10 --auto-approve
late_created() { [ "$(grep -c '(late): created PENDING' "$FB_LOG")" -gt "$lates_before" ]; }
if poll_until 120 late_created; then SEEN=yes; else SEEN=no; fi
late_id=$(grep '(late): created PENDING' "$FB_LOG" | tail -n 1 | sed 's/.* \(conn-[0-9a-f]*\) .*/\1/')
APPLYING=no
kill -0 "$BG_PID" 2>/dev/null && APPLYING=yes
kill -KILL "$FB_PID"
mo_wait "$BG_PID"
check_eq "before the kill: the provider had made late, PENDING" yes "$SEEN"
check_eq "the apply was still running when the provider was killed" yes "$APPLYING"
check_true "the interrupted apply failed (exit $BG_RC)" test "$BG_RC" != 0
check_true "... waiting for late" grep -q "connection.late: create failed" "$T/bg.log"
fb_start --ports 4 --provision-delay-ms 400 --deprovision-delay-ms 300
check_eq "the restarted provider listens on the same port" "$FB_URL" "http://127.0.0.1:$FB_PORT"
check_eq "it still has late (PENDING or done)" "$late_id" "$(fb_id late)"
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --auto-approve
check_rc "the next apply recovers" 0
has "the lost create is adopted" "module.ic.connection.late: pending operation of an interrupted run resolved (adopted"
check_eq "late PROVISIONED, the connection the lost run made" "PROVISIONED 100 120 320 $late_id" \
	"$(fb_conn late) $(fb_id late)"
check_eq "one late connection, not two" 1 "$(fb_conns | jq '[.[] | select(.name == "late")] | length')"
check_state_matches "state == provider"
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --detailed-exitcode
check_rc "plan after recovery is empty" 0

say "delete: backup removed from the plan; deprovisioned, then gone"
backup_id=$(fb_id backup)
mo apply "$PLAN" "${V[@]}" "${V2[@]}" --var with_backup=false --auto-approve
check_rc "apply exits 0" 0
has "1 destroyed" "0 replaced, 1 destroyed"
code=$(fb_curl -o /dev/null -w '%{http_code}' "$FB_URL/v1/connections/$backup_id")
check_eq "the provider answers 404 for backup" 404 "$code"
check_true "the module waited through DEPROVISIONING" \
	grep -q "$backup_id (backup): DEPROVISIONING -> GONE" "$FB_LOG"
check_state_matches "state == provider"

say "destroy"
mo destroy "$PLAN" "${V[@]}" "${V2[@]}" --var with_backup=false --auto-approve
check_rc "destroy exits 0" 0
check_eq "the provider holds no connection" 0 "$(fb_stat .total_connections)"
check_eq "the state is empty" 0 "$("$MECORCH" state list </dev/null | grep -c .)"

say "bearer token; the token never reaches the state"
kill -TERM "$FB_PID"
wait "$FB_PID" 2>/dev/null
FB_PORT=
FB_STATE=$T/fabric-auth.state
fb_start --ports 4 --token 'tok-s3cret'
export MECORCH_STATE=$T/auth.db
VA=(--var "endpoint=$FB_URL" --var with_backup=false)
code=$(curl -s -o /dev/null -w '%{http_code}' "$FB_URL/v1/ports")
check_eq "the provider wants a token (401)" 401 "$code"
mo apply "$PLAN" "${VA[@]}" --var token=wrong --auto-approve
check_rc "apply with a wrong token fails" 1
has "... saying what to check" "(401): check the \`token\` input"
mo apply "$PLAN" "${VA[@]}" --var token=tok-s3cret --auto-approve
check_rc "apply with the token exits 0" 0
FB_AUTH=(-H 'Authorization: Bearer tok-s3cret')
check_eq "web PROVISIONED" "PROVISIONED 1000 100 200" "$(fb_conn web)"
check_eq "one connection (the failed run made none)" 1 "$(fb_conns | jq length)"
mo plan "$PLAN" "${VA[@]}" --var token=tok-s3cret --detailed-exitcode
check_rc "plan after it is empty" 0
check_true "the state holds no clear token" bash -c "! cat '$MECORCH_STATE'* | grep -aq 'tok-s3cret'"
mo destroy "$PLAN" "${VA[@]}" --var token=tok-s3cret --auto-approve
check_rc "destroy with the token exits 0" 0
check_eq "the provider holds no connection" 0 "$(fb_stat .total_connections)"

finish
