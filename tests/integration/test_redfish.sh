#!/usr/bin/env bash
# test_redfish.sh - iac-modules/bare-metal/redfish against the redfish BMC
# emulator (examples/lab/redfish.c): power on with a one-time PXE override
# (consumed by that boot, and the plan after apply still empty), drift made
# with curl, updates, re-arming, the asynchronous power path seen in the
# emulator's log and /_stats, allowable-value validation, retries under an
# injected fail rate, a replace, the BMC killed mid-apply and restarted,
# deletes, and Basic auth with the password kept out of the state.
source "$(dirname "$0")/lib.sh"

REDFISH=${REDFISH:-$(dirname "$MECORCH")/redfish}
MODULE=$MO_SOURCE_DIR/iac-modules/bare-metal/redfish
if [ ! -x "$REDFISH" ]; then
	echo "missing binary $REDFISH (build the redfish target, or set REDFISH)" >&2
	exit 1
fi

RF_PID=
RF_PORT=
RF_URL=
RF_LOG=$T/redfish.log
RF_STATE=$T/redfish.state
RF_AUTH=()

# rf_start [redfish options...]: the BMC on 127.0.0.1 (emu_start; on
# $RF_PORT again when set: a restart), its machines kept in $RF_STATE.
rf_start() {
	emu_start redfish "$RF_PORT" "$RF_LOG" "$REDFISH" --state-file "$RF_STATE" "$@"
	RF_PID=$EMU_PID
	RF_PORT=$EMU_PORT
	RF_URL=http://127.0.0.1:$RF_PORT
}

rf_curl() { curl -sS --max-time 30 "${RF_AUTH[@]}" -H 'Content-Type: application/json' "$@"; }
rf_state() { rf_curl "$RF_URL/_state"; }
rf_stat() { rf_curl "$RF_URL/_stats" | jq -r "$1"; }
rf_config() { rf_curl -X PUT "$RF_URL/_config" -d "$1" >/dev/null; }
# "PowerState Enabled Target" of system N as the machine is.
rf_sys() {
	rf_state | jq -r --arg s "System.Embedded.$1" \
		'.systems[$s] | "\(.PowerState) \(.Boot.BootSourceOverrideEnabled) \(.Boot.BootSourceOverrideTarget)"'
}
# Wait (up to 60 s) until system N has no power transition pending.
_rf_settled() {
	[ "$(rf_state | jq -r --arg s "System.Embedded.$1" '.systems[$s].pending')" = null ]
}
rf_settle() {
	poll_until 60 _rf_settled "$1"
}
# has DESC TEXT: the last `mo`'s stdout or stderr contains TEXT (grep on
# the files: no pipe, so no SIGPIPE under pipefail on long outputs).
has() {
	if grep -qF -- "$2" "$OUT" "$ERR"; then
		_pass "$1"
	else
		_fail "$1" "expected the output to contain: $2"
		_last_output
	fi
}

# The line number of the first log line matching a regular expression.
log_line() { grep -n -m1 -E "$1" "$RF_LOG" | cut -d: -f1; }

# check_power_matches DESC: every system_power in the state records the
# PowerState the machine reports (and there is at least one).
check_power_matches() {
	local st em s
	st=$("$MECORCH" show --json </dev/null | jq -r 'select(.type == "system_power") |
		"\(.props.system) \(.props.power_state)"' | LC_ALL=C sort)
	em=$(for s in $(echo "$st" | cut -d' ' -f1); do
		echo "$s $(rf_state | jq -r --arg s "$s" '.systems[$s].PowerState')"
	done | LC_ALL=C sort)
	if [ -z "$st" ]; then
		_fail "$1" "no system_power in the state"
	else
		check_eq "$1" "$st" "$em"
	fi
}

PLAN=$T/redfish-plan.lua
cat >"$PLAN" <<EOF
-- Three machines behind one BMC: S1 powered with a one-time boot override,
-- S2 powered only, S3 with a continuous override only.
local endpoint = variable("endpoint", { type = "string" })
local user = variable("user", { type = "string", default = "" })
local password = variable("password", { type = "string", default = "", sensitive = true })
local s1_power = variable("s1_power", { type = "string", default = "On" })
local s1_target = variable("s1_target", { type = "string", default = "Pxe" })
local s1_gen = variable("s1_gen", { type = "integer", default = 1 })
local s2_power = variable("s2_power", { type = "string", default = "Off" })
local s3_target = variable("s3_target", { type = "string", default = "Hdd" })
local with_s2 = variable("with_s2", { type = "boolean", default = true })
local with_s3 = variable("with_s3", { type = "boolean", default = true })
local on_delete = variable("on_delete", { type = "string", default = "keep" })

local systems = {
  ["System.Embedded.1"] = { power = s1_power,
                            boot = { target = s1_target, enabled = "Once", generation = s1_gen } },
}
if with_s2 then
  systems["System.Embedded.2"] = { power = s2_power }
end
if with_s3 then
  systems["System.Embedded.3"] = { boot = { target = s3_target, enabled = "Continuous" } }
end
local bmc = module("bmc", {
  source = "$MODULE",
  inputs = {
    endpoint = endpoint,
    username = user ~= "" and user or nil,
    password = password ~= "" and password or nil,
    systems = systems,
    off_reset_type = "ForceOff",
    on_delete = on_delete,
    power_timeout_s = 120,
    poll_interval_ms = 50,
  },
})
output("systems", bmc.systems)
EOF

say "start the BMC: 3 systems, Off, power transitions take 400 ms"
rf_start --systems 3 --power-delay-ms 400
V=(--var "endpoint=$RF_URL")

say "apply: arm a one-time PXE boot on S1 and power it on; S2 off; S3 boots from Hdd"
# This power-on takes 1.5 s, so that the module's polls surely see the
# transition pending (stale_reads below) however slow the machine.
rf_config '{"power_delay_ms":1500}'
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply exits 0" 0
has "4 resources created" "4 created, 0 updated"
check_eq "S1 is On, its one-time override consumed by that boot (target kept)" \
	"On Disabled Pxe" "$(rf_sys 1)"
check_eq "S1 booted once" 1 "$(rf_state | jq '.systems["System.Embedded.1"].boots')"
check_eq "S2 untouched: Off" "Off Disabled None" "$(rf_sys 2)"
check_eq "S3 has a continuous Hdd override" "Off Continuous Hdd" "$(rf_sys 3)"
check_eq "the override was set before the power-on (BMC log order)" 1 \
	"$([ "$(log_line 'System.Embedded.1: PATCH')" -lt "$(log_line 'System.Embedded.1: Reset On accepted')" ] && echo 1)"
check_eq "the Reset was accepted before PowerState On showed (BMC log order)" 1 \
	"$([ "$(log_line 'System.Embedded.1: Reset On accepted')" -lt "$(log_line 'System.Embedded.1: PowerState On')" ] && echo 1)"
check_true "the module read S1 still Off while the transition was pending (stale_reads > 0)" \
	test "$(rf_stat .stale_reads)" -gt 0
rf_config '{"power_delay_ms":400}'
check_power_matches "state power_state == the machines' PowerState"

say "plan right after apply is empty; the consumed override is reported, not re-armed"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "plan --detailed-exitcode exits 0" 0
has "plan reports the consumed one-time override" "one-time boot override (Pxe) was consumed by a boot"
check_eq "S1's override was not re-armed by plan" "On Disabled Pxe" "$(rf_sys 1)"

say "drift: S3's override and S2's power changed behind mecorch's back"
rf_curl -X PATCH "$RF_URL/redfish/v1/Systems/System.Embedded.3" \
	-d '{"Boot":{"BootSourceOverrideTarget":"Cd"}}' >/dev/null
rf_curl -X POST "$RF_URL/redfish/v1/Systems/System.Embedded.2/Actions/ComputerSystem.Reset" \
	-d '{"ResetType":"On"}' >/dev/null
rf_settle 2
mo refresh "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "refresh --detailed-exitcode exits 2 (drift)" 2
has "drift names S3's boot override" "module.bmc.boot_override.System.Embedded.3: changed"
has "drift names S2's power" "module.bmc.system_power.System.Embedded.2: changed"
mo apply "$PLAN" "${V[@]}" --auto-approve
check_rc "apply puts it back" 0
has "2 resources updated" "0 created, 2 updated"
check_eq "S3 boots from Hdd again" "Off Continuous Hdd" "$(rf_sys 3)"
check_eq "S2 is Off again" "Off Disabled None" "$(rf_sys 2)"
mo plan "$PLAN" "${V[@]}" --detailed-exitcode
check_rc "plan after the repair is empty" 0

say "update: power S1 off"
mo apply "$PLAN" "${V[@]}" --var s1_power=Off --auto-approve
check_rc "apply exits 0" 0
has "exactly 1 update" "0 created, 1 updated, 0 replaced, 0 destroyed"
check_eq "S1 is Off" "Off Disabled Pxe" "$(rf_sys 1)"
has "the module waited for the transition" "Reset ForceOff accepted; waiting for PowerState Off"

say "replace: generation 2 is a new one-time override (re-armed), then S1 powers on and boots from it"
mo plan "$PLAN" "${V[@]}" --var s1_gen=2 --detailed-exitcode
check_rc "plan shows changes" 2
has "the override is replaced" "boot_override.System.Embedded.1 must be replaced (generation changed (replace_on))"
mo apply "$PLAN" "${V[@]}" --var s1_gen=2 --auto-approve
check_rc "apply exits 0" 0
has "1 replaced (override), 1 updated (power)" "0 created, 1 updated, 1 replaced, 0 destroyed"
check_eq "S1 On, the new override consumed" "On Disabled Pxe" "$(rf_sys 1)"
check_eq "S1 booted twice in all" 2 "$(rf_state | jq '.systems["System.Embedded.1"].boots')"
check_true "the BMC saw the new override armed before the power-on" \
	test "$(grep -c 'System.Embedded.1: PATCH: Boot override Once/Pxe' "$RF_LOG")" -eq 2
mo plan "$PLAN" "${V[@]}" --var s1_gen=2 --detailed-exitcode
check_rc "plan after it is empty" 0

say "validation: allowable values and ETags"
resp=$(rf_curl -X PATCH "$RF_URL/redfish/v1/Systems/System.Embedded.1" \
	-d '{"Boot":{"BootSourceOverrideTarget":"Floppy"}}' -w '\n%{http_code}')
check_eq "PATCH of a target outside the allowable values: 400" 400 "${resp##*$'\n'}"
check_eq "... with a Redfish error naming PropertyValueNotInList" "Base.1.16.0.PropertyValueNotInList" \
	"$(echo "${resp%$'\n'*}" | jq -r '.error["@Message.ExtendedInfo"][0].MessageId')"
code=$(rf_curl -o /dev/null -w '%{http_code}' -X PATCH -H 'If-Match: "stale"' \
	"$RF_URL/redfish/v1/Systems/System.Embedded.1" -d '{"Boot":{"BootSourceOverrideTarget":"Hdd"}}')
check_eq "PATCH with a stale If-Match: 412" 412 "$code"
mo apply "$PLAN" "${V[@]}" --var s1_gen=2 --var s1_target=Floppy --auto-approve
check_rc "apply of a target the system does not allow fails" 1
has "the error names the value and what is allowed" "does not allow BootSourceOverrideTarget Floppy (allowed: None, Pxe"
check_eq "S1's override unchanged" "On Disabled Pxe" "$(rf_sys 1)"

say "injected failures: 25% of BMC requests answer 500/503; the driver retries"
rf_stats_reset() { rf_curl -X POST "$RF_URL/_stats/reset" >/dev/null; }
rf_stats_reset
rf_config '{"fail_rate":0.25}'
mo apply "$PLAN" "${V[@]}" --var s1_gen=2 --var s1_power=Off --var s2_power=On --var s3_target=Usb \
	--retry-max 12 --retry-base-ms 5 --auto-approve
check_rc "apply exits 0 despite the failures" 0
has "3 updates" "0 created, 3 updated"
check_true "the BMC answered some requests 500/503" \
	test "$(rf_stat '(.responses["500"] // 0) + (.responses["503"] // 0)')" -gt 0
has "the retries were logged" "retry 1 of 12"
rf_config '{"fail_rate":0}'
check_eq "S1 Off" "Off Disabled Pxe" "$(rf_sys 1)"
check_eq "S2 On" "On Disabled None" "$(rf_sys 2)"
check_eq "S3 boots from Usb" "Off Continuous Usb" "$(rf_sys 3)"
V2=(--var s1_gen=2 --var s1_power=Off --var s2_power=On --var s3_target=Usb)
mo plan "$PLAN" "${V[@]}" "${V2[@]}" --detailed-exitcode
check_rc "plan after it is empty" 0

say "the BMC is killed while mecorch waits for S1 to power on, then restarted"
rf_config '{"power_delay_ms":2500}'
resets_before=$(grep -c 'System.Embedded.1: Reset On accepted' "$RF_LOG")
mo_bg "$T/bg.log" apply "$PLAN" "${V[@]}" --var s1_gen=2 --var s1_power=On --var s2_power=On \
	--var s3_target=Usb --retry-max 1 --retry-base-ms 10 --auto-approve
reset_accepted() { [ "$(grep -c 'System.Embedded.1: Reset On accepted' "$RF_LOG")" -gt "$resets_before" ]; }
if poll_until 120 reset_accepted; then SEEN=yes; else SEEN=no; fi
APPLYING=no
kill -0 "$BG_PID" 2>/dev/null && APPLYING=yes
kill -KILL "$RF_PID"
mo_wait "$BG_PID"
check_eq "before the kill: the BMC had accepted S1's Reset On" yes "$SEEN"
check_eq "the apply was still running when the BMC was killed" yes "$APPLYING"
check_true "the interrupted apply failed (exit $BG_RC)" test "$BG_RC" != 0
check_true "... in S1's power change" grep -q "system_power.System.Embedded.1: update failed" "$T/bg.log"
rf_start --systems 3 --power-delay-ms 400
check_eq "the restarted BMC listens on the same port" "$RF_URL" "http://127.0.0.1:$RF_PORT"
V3=(--var s1_gen=2 --var s1_power=On --var s2_power=On --var s3_target=Usb)
mo apply "$PLAN" "${V[@]}" "${V3[@]}" --auto-approve
check_rc "the next apply recovers" 0
rf_settle 1
check_eq "S1 is On (the transition the BMC was in survived its restart)" "On" "$(rf_sys 1 | cut -d' ' -f1)"
check_power_matches "state power_state == the machines' PowerState"
mo plan "$PLAN" "${V[@]}" "${V3[@]}" --detailed-exitcode
check_rc "plan after recovery is empty" 0

say "delete: S3's override removed; S2 left out with on_delete = keep"
mo apply "$PLAN" "${V[@]}" "${V3[@]}" --var with_s3=false --var with_s2=false --auto-approve
check_rc "apply exits 0" 0
has "2 destroyed" "0 replaced, 2 destroyed"
check_eq "S3's override is disabled" "Off Disabled Usb" "$(rf_sys 3)"
check_eq "S2 left as it was: On" "On Disabled None" "$(rf_sys 2)"

say "destroy with on_delete = off (recorded first: destroy acts on the state) powers S1 off"
V4=("${V3[@]}" --var with_s3=false --var with_s2=false --var on_delete=off)
mo apply "$PLAN" "${V[@]}" "${V4[@]}" --auto-approve
check_rc "apply of on_delete = off exits 0" 0
has "1 update, nothing else" "0 created, 1 updated, 0 replaced, 0 destroyed"
check_eq "S1 still On" "On" "$(rf_sys 1 | cut -d' ' -f1)"
mo destroy "$PLAN" "${V[@]}" "${V4[@]}" --auto-approve
check_rc "destroy exits 0" 0
has "2 destroyed" "2 destroyed"
check_eq "S1 Off, no override" "Off Disabled Pxe" "$(rf_sys 1)"
check_eq "the state is empty" 0 "$("$MECORCH" state list </dev/null | grep -c .)"

say "HTTP Basic auth; the password never reaches the state"
kill -TERM "$RF_PID"
wait "$RF_PID" 2>/dev/null
RF_PORT=
RF_STATE=$T/redfish-auth.state
rf_start --systems 1 --user admin --password 's3cret-pw'
export MECORCH_STATE=$T/auth.db
VA=(--var "endpoint=$RF_URL" --var user=admin --var with_s2=false --var with_s3=false)
code=$(curl -s -o /dev/null -w '%{http_code}' "$RF_URL/redfish/v1/Systems")
check_eq "the BMC wants credentials (401)" 401 "$code"
mo apply "$PLAN" "${VA[@]}" --var password=wrong --auto-approve
check_rc "apply with a wrong password fails" 1
has "... saying what to check" "(401): check \`username\` and \`password\`"
mo apply "$PLAN" "${VA[@]}" --var password=s3cret-pw --auto-approve
check_rc "apply with the right password exits 0" 0
RF_AUTH=(-u admin:s3cret-pw)
check_eq "S1 On, override consumed" "On Disabled Pxe" "$(rf_sys 1)"
mo plan "$PLAN" "${VA[@]}" --var password=s3cret-pw --detailed-exitcode
check_rc "plan after it is empty" 0
check_true "the state holds no clear password" \
	bash -c "! cat '$MECORCH_STATE'* | grep -aq 's3cret-pw'"
check_eq "the state records the password as a keyed hash" "hmac-sha256" \
	"$("$MECORCH" show --json </dev/null | jq -r 'select(.type == "system_power") | .props.password["$sensitive"]' | cut -d: -f1)"
mo destroy "$PLAN" "${VA[@]}" --var password=s3cret-pw --auto-approve
check_rc "destroy with the password exits 0" 0
check_eq "S1's override disabled, its power kept (on_delete = keep)" "On Disabled Pxe" "$(rf_sys 1)"

finish
