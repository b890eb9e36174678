#!/usr/bin/env bash
# test_cli.sh - the command line: help and usage, invalid input of every
# kind (each a clear message naming the option or file, and the documented
# exit status), missing plan files and state databases, state show / rm / mv,
# import of an object made outside mecorch, refresh reporting drift made
# behind mecorch's back, sensitive values kept out of every file and output,
# and, on a pseudo-terminal (script(1)), the live status line and colours.
source "$(dirname "$0")/lib.sh" || exit 1

P=$FIXTURES/plans
FLAT=$P/flat.lua

# ---------------------------------------------------------------------------
say "help and usage"
for cmd in init validate plan apply destroy refresh show output state import lock graph version help; do
	mo "$cmd" --help
	if [ "$RC" -eq 0 ] && grep -q "usage: mecorch" "$OUT" "$ERR"; then
		_pass "mecorch $cmd --help exits 0 with a usage line"
	else
		_fail "mecorch $cmd --help exits 0 with a usage line" "exit status $RC"
		_last_output
	fi
done
mo --help
check_rc "mecorch --help exits 0" 0
mo help plan
check_rc "mecorch help plan exits 0" 0
check_out_has "mecorch help plan shows plan's usage" "usage: mecorch plan"
mo
check_rc "mecorch alone exits 3" 3
check_out_has "mecorch alone prints the usage" "usage: mecorch COMMAND"
mo version
check_rc "mecorch version exits 0" 0
mo frobnicate
check_rc "an unknown command exits 3" 3
check_out_has "the message names the command" "frobnicate"
mo plan --bogus-option
check_rc "an unknown option exits 3" 3
check_out_has "the message names the option" "--bogus-option"
mo apply "$FLAT" --parallelism zero
check_rc "a bad option value exits 3" 3
check_out_has "the message names the option" "parallelism"

say "option errors name the option, not its value"
mo output --parallelism 3
check_rc "output --parallelism 3 exits 3" 3
check_out_has "the message names --parallelism" "output does not take option --parallelism"
check_out_lacks "... not its value" "'3'"
mo show --var x=1
check_rc "show --var x=1 exits 3" 3
check_out_has "the message names --var" "show does not take option --var"
check_out_lacks "... not its value" "x=1"
mo validate "$FLAT" -upgrade
check_rc "validate -upgrade exits 3" 3
check_out_has "a one-dash long option is read as --upgrade, which validate does not take" \
	"validate does not take option --upgrade"
mo plan "$FLAT" --state
check_rc "--state without a value exits 3" 3
check_out_has "the message says the option needs a value" "option --state needs a value"
mo plan "$FLAT" --json=yes
check_rc "--json=yes exits 3" 3
check_out_has "the message says --json takes no value" "option --json takes no value"
mo plan "$FLAT" -d
check_rc "an ambiguous abbreviation exits 3" 3
check_out_has "the message names the candidates" "option '-d' is ambiguous: --detailed-exitcode, --destroy"
mo plan "$FLAT" -x
check_rc "an unknown short option exits 3" 3
check_out_has "the message names it" "unknown option '-x'"
# init with one-dash long options (a plan of its own: init writes beside it)
mkdir -p "$T/init"
cat >"$T/init/plan.lua" <<EOF
module("g", {
  source = "$GENERIC",
  inputs = { endpoint = "http://127.0.0.1:9", collection = "c", objects = {} },
})
EOF
mo init "$T/init/plan.lua" -upgrade -json
check_rc "init PLAN -upgrade -json exits 0" 0
check_eq "... and resolves the module (one JSON line of type module)" "module g" \
	"$(jq -r 'select(.type == "module") | "\(.type) \(.name)"' "$OUT")"

say "a command's --help lists the options it takes, and only those"
mo output --help
check_out_has "output --help lists --state" "--state PATH"
check_out_has "output --help lists --json" "--json"
check_out_lacks "output --help does not list --parallelism" "--parallelism"
check_out_lacks "output --help does not list --var" "--var"
check_out_lacks "output --help does not list --task-memory" "--task-memory"
check_out_lacks "no command offers --show-sensitive" "show-sensitive"
mo validate --help
check_out_has "validate --help lists --task-instructions" "--task-instructions N"
check_out_lacks "validate --help does not list --state" "--state"
check_out_lacks "validate --help does not list --auto-approve" "--auto-approve"
mo apply --help
check_out_has "apply --help lists --auto-approve" "--auto-approve"
check_out_has "apply --help lists --parallelism" "--parallelism N"
check_out_lacks "apply --help does not list --out" "--out FILE"
mo output --show-sensitive
check_rc "output --show-sensitive exits 3" 3
check_out_has "--show-sensitive is not an option" "unknown option '--show-sensitive'"

say "validate honours the sandbox limits"
mo validate "$FLAT" --var endpoint=http://127.0.0.1:9 --task-instructions 100000000 --task-memory 32
check_rc "validate --task-instructions 100000000 --task-memory 32 exits 0" 0
mo validate "$FLAT" --var endpoint=http://127.0.0.1:9 --task-instructions 1000
check_rc "validate of 200 objects within 1000 instructions exits 7 (module error)" 7
check_out_has "the message names the budget" "instruction budget of 1000 exceeded"

say "missing files and state databases"
mo validate "$T/nonexist.lua"
check_rc "validate of a missing plan file exits 4" 4
check_out_has "the message names the file" "$T/nonexist.lua: no such file"
mo plan "$T/nonexist.lua" --refresh=false
check_rc "plan of a missing plan file exits 4" 4
mo validate
check_rc "validate without a plan and without ./plan.lua exits 4" 4
check_out_has "the message says so" "./plan.lua does not exist"
mo show "$T/nonexist.plan"
check_rc "show of a missing saved plan exits 4" 4
check_out_has "the message names the file" "$T/nonexist.plan: no such file"
TYPO=$T/typo.db
for args in "show" "show --json" "output" "output --json" "state list" "state list --json" \
	"state show module.flat.object.o0001" "state rm module.flat.object.o0001" \
	"state mv module.flat.object.o0001 module.flat.object.o0002" "lock list" "lock list --json" \
	"lock unlock some-id"; do
	# shellcheck disable=SC2086 # word splitting of args is wanted
	mo $args --state "$TYPO"
	check_rc "$args --state typo.db exits 4" 4
	check_out_has "$args: the message names the path" "no state at $TYPO"
	check_true "$args creates no database" test ! -e "$TYPO"
done
mo lock list --json --state "$TYPO"
check_eq "lock list --json: the error is one JSON line of type error" "error 4" \
	"$(jq -r '"\(.type) \(.exit)"' "$OUT")"
mo plan "$FLAT" --var endpoint=http://127.0.0.1:9 --var count=2 --refresh=false --state "$T/new.db"
check_rc "plan on a new state still works (exit 0)" 0

# ---------------------------------------------------------------------------
say "invalid input"
mo validate "$FLAT" --var endpoint=http://127.0.0.1:9 --var count=2
check_rc "validate of a good plan exits 0" 0
count_in_plan() {
	jq -r 'select(.resource_changes) | .resource_changes | length' "$OUT"
}
mo plan "$FLAT" --var endpoint=http://127.0.0.1:9 --var count=2 --refresh=false --json
check_eq "--var count=2 declares 2 objects" 2 "$(count_in_plan)"
echo '{"endpoint": "http://127.0.0.1:9", "count": 3}' >"$T/vars.json"
mo plan "$FLAT" --var-file "$T/vars.json" --refresh=false --json
check_eq "--var-file with count 3 declares 3 objects" 3 "$(count_in_plan)"
MECORCH_VAR_count=4 mo plan "$FLAT" --var endpoint=http://127.0.0.1:9 --refresh=false --json
check_eq "MECORCH_VAR_count=4 declares 4 objects" 4 "$(count_in_plan)"
echo '{"endpoint": ' >"$T/bad.json"
mo plan "$FLAT" --var-file "$T/bad.json"
check_rc "a --var-file that is not JSON exits 3" 3
check_out_has "the message names the file" "bad.json"
mo validate "$FLAT" --var endpoint=http://127.0.0.1:9 --var colour=blue
check_rc "--var of an undeclared variable exits 3" 3
check_out_has "the message names the variable" "colour"
mo validate "$FLAT" --var endpoint=http://127.0.0.1:9 --var count=many
check_rc "--var count=many for an integer variable exits 3" 3
check_out_has "the message names the variable and the type" "variable 'count': 'many' is not an integer"
mo validate "$FLAT"
check_rc "a missing required variable exits 3" 3
check_out_has "the message names the variable" "variable 'endpoint' has no value"
mo validate "$P/syntax_error.lua" --var endpoint=http://127.0.0.1:9
check_rc "a plan with a syntax error exits 3" 3
check_out_has "the message names file:line" "syntax_error.lua:6:"
mo validate "$P/unknown_input.lua" --var endpoint=http://127.0.0.1:9
check_rc "a module instance with an unknown input exits 3" 3
check_out_has "the message names the instance and the input" "module 'painted' has no input 'colour'"
check_out_has "the message names file:line" "unknown_input.lua:3:"
mo validate "$P/cycle.lua" --var endpoint=http://127.0.0.1:9
check_rc "a hand-written \$ref cannot forge a reference (no cycle possible): the plan is valid" 0
mo graph "$P/cycle.lua" --var endpoint=http://127.0.0.1:9
check_out_lacks "no edge from alpha to beta" '"module.alpha.object.x" -> "module.beta'
check_out_has "beta depends on alpha through its real reference" '"module.beta.object.x" -> "module.alpha.object.x"' 

BADRET=$FIXTURES/modules/badret/module.lua
line_id=$(grep -n -- '-- create of bad_id' "$BADRET" | cut -d: -f1)
line_out=$(grep -n -- '-- create of bad_outputs' "$BADRET" | cut -d: -f1)
mo apply "$P/badret.lua" --var kind=id --auto-approve
check_rc "create() returning no id fails the apply (exit 1)" 1
check_out_has "the message names the address, handler, module and line" \
	"module.broken.bad_id.r: create() of module broken (test/badret, defined at module.lua:$line_id) returned an invalid id"
check_out_lacks "the final error list does not repeat the address" "module.broken.bad_id.r: module.broken.bad_id.r:"
mo apply "$P/badret.lua" --var kind=outputs --auto-approve
check_rc "create() returning non-serialisable outputs fails the apply (exit 1)" 1
check_out_has "the message names the address, handler, module and line" \
	"module.broken.bad_outputs.r: create() of module broken (test/badret, defined at module.lua:$line_out) returned outputs that are not JSON-serialisable"
check_out_has "the message names the offending field" "outputs.callback"
check_out_lacks "the final error list does not repeat the address" \
	"module.broken.bad_outputs.r: module.broken.bad_outputs.r:"
mo apply "$P/badret.lua" --var kind=ok --auto-approve
check_rc "the same module with good returns applies (exit 0)" 0
check_eq "the state holds only the good resource" "module.broken.good.r" "$("$MECORCH" state list)"
rm -f "$MECORCH_STATE"

# ---------------------------------------------------------------------------
say "state show / rm / mv"
lab_start
V=(--var "endpoint=$LAB_URL" --var count=4 --var collection=cli)
id_of() { lab_items cli | jq -r --arg n "$1" '.[] | select(.name == $n) | .id'; }
mo apply "$FLAT" "${V[@]}" --auto-approve
check_rc "apply of 4 objects exits 0" 0
mo state show module.flat.object.o0002
check_rc "state show ADDRESS exits 0" 0
check_out_has "state show prints the id" "$(id_of o0002)"
mo state show --json module.flat.object.o0002
check_eq "state show --json: address, id, props" "module.flat.object.o0002 $(id_of o0002) o0002 2" \
	"$(jq -r '"\(.address) \(.id) \(.props.name) \(.props.fields.index)"' "$OUT")"
mo state show module.flat.object.nope
check_rc "state show of an unknown address exits 4" 4
check_out_has "the message names the address" "module.flat.object.nope"

mo state rm --json module.flat.object.o0004
check_rc "state rm --json exits 0" 0
check_eq "state rm --json prints one JSON line: type state_rm, the address" \
	"state_rm module.flat.object.o0004" "$(jq -r '"\(.type) \(.address)"' "$OUT")"
check_eq "state list lacks the removed resource" \
	"module.flat.object.o0001 module.flat.object.o0002 module.flat.object.o0003" \
	"$("$MECORCH" state list | tr '\n' ' ' | sed 's/ $//')"
check_eq "the object itself is untouched in labcloud" 4 "$(lab_total)"
mo state rm module.flat.object.o0004
check_rc "state rm of an address not in the state exits 4" 4

mo state mv module.flat.object.o0001 module.flat.object.o0009
check_rc "state mv exits 0" 0
mo state show --json module.flat.object.o0009
check_eq "the moved resource keeps its id" "$(id_of o0001)" "$(jq -r .id "$OUT")"
mo plan "$FLAT" "${V[@]}" --json
check_eq "plan after mv: create o0001 and o0004 (gone from the state), delete o0009" \
	"module.flat.object.o0001:create module.flat.object.o0004:create module.flat.object.o0009:delete" \
	"$(jq -r 'select(.resource_changes) | .resource_changes[] | select(.change.actions != ["no-op"])
		| "\(.address):\(.change.actions | join(","))"' "$OUT" | sort | tr '\n' ' ' | sed 's/ $//')"
mo state mv module.flat.object.o0009 module.flat.object.o0002
check_rc "state mv onto an existing address is refused (exit 3)" 3
mo state mv --json module.flat.object.o0009 module.flat.object.o0001
check_rc "state mv --json back exits 0" 0
check_eq "state mv --json prints one JSON line: type state_mv, from, to" \
	"state_mv module.flat.object.o0009 module.flat.object.o0001" \
	"$(jq -r '"\(.type) \(.from) \(.to)"' "$OUT")"

# ---------------------------------------------------------------------------
say "import"
mo import "$FLAT" module.flat.object.o0004 "$(id_of o0004)" "${V[@]}" --json
check_rc "import --json of the object state rm forgot exits 0" 0
check_eq "import --json ends with one JSON line: type import, address, id" \
	"import module.flat.object.o0004 $(id_of o0004)" "$(tail -n 1 "$OUT" | jq -r '"\(.type) \(.address) \(.id)"')"
check_eq "every line of import --json is JSON with a type" "$(grep -c . "$OUT")" \
	"$(jq -r '.type // empty' "$OUT" | grep -c .)"
mo plan "$FLAT" "${V[@]}" --detailed-exitcode
check_rc "plan afterwards is empty" 0
ext=$(lab_post /v1/cli '{"name":"o0005","index":5,"gen":"g0"}' | jq -r .id)
check_true "an object created directly in labcloud with curl ($ext)" test -n "$ext"
V5=(--var "endpoint=$LAB_URL" --var count=5 --var collection=cli)
mo plan "$FLAT" "${V5[@]}" --json
check_eq "before import, plan with count=5 would create o0005" "create" \
	"$(jq -r 'select(.resource_changes) | .resource_changes[] | select(.address == "module.flat.object.o0005")
		| .change.actions | join(",")' "$OUT")"
mo import "$FLAT" module.flat.object.o0005 "$ext" "${V5[@]}"
check_rc "import exits 0" 0
mo state show --json module.flat.object.o0005
check_eq "the state records it with labcloud's id" "$ext" "$(jq -r .id "$OUT")"
mo plan "$FLAT" "${V5[@]}" --json
check_eq "plan shows no change at all for it" "no-op" \
	"$(jq -r 'select(.resource_changes) | .resource_changes[] | select(.address == "module.flat.object.o0005")
		| .change.actions | join(",")' "$OUT")"
mo plan "$FLAT" "${V5[@]}" --detailed-exitcode
check_rc "plan with count=5 is empty" 0
mo import "$FLAT" module.flat.object.o0006 obj-0000000000000000 "${V5[@]}"
check_rc "import of an address the plan does not declare exits 4" 4
check_out_has "the message says so" "module.flat.object.o0006 is not declared by the plan"
mo import "$FLAT" module.flat.object.o0005 "$ext" "${V5[@]}"
check_rc "import onto an address already in the state exits 3" 3
check_out_has "the message says so" "module.flat.object.o0005 is already in the state"
V6=(--var "endpoint=$LAB_URL" --var count=6 --var collection=cli)
mo import "$FLAT" module.flat.object.o0006 obj-0000000000000000 "${V6[@]}"
check_rc "import of an id labcloud does not hold exits 4" 4
check_out_has "the message names the id" "found no object with id obj-0000000000000000"
mo state show module.flat.object.o0006
check_rc "... and records nothing" 4
check_lab_matches_state "labcloud objects == state resources"

# ---------------------------------------------------------------------------
say "refresh reports drift made behind mecorch's back"
mo refresh "$FLAT" "${V5[@]}" --detailed-exitcode
check_rc "refresh --detailed-exitcode without drift exits 0" 0
id2=$(id_of o0002)
id3=$(id_of o0003)
lab_put "/v1/cli/$id2" '{"name":"o0002","index":2,"gen":"changed-by-curl"}' >/dev/null
lab_delete "/v1/cli/$id3" >/dev/null
mo refresh "$FLAT" "${V5[@]}" --detailed-exitcode
check_rc "refresh --detailed-exitcode with drift exits 2" 2
check_out_has "refresh reports the changed object" "module.flat.object.o0002: changed"
check_out_has "refresh reports the deleted object" "module.flat.object.o0003: gone"
mo state show --json module.flat.object.o0002
check_eq "the state now records what was read" "changed-by-curl" "$(jq -r .props.fields.gen "$OUT")"
mo plan "$FLAT" "${V5[@]}" --json
check_eq "plan: an update of the changed object, a create of the deleted one, nothing else" \
	"module.flat.object.o0002:update module.flat.object.o0003:create" \
	"$(jq -r 'select(.resource_changes) | .resource_changes[] | select(.change.actions != ["no-op"])
		| "\(.address):\(.change.actions | join(","))"' "$OUT" | sort | tr '\n' ' ' | sed 's/ $//')"
mo apply "$FLAT" "${V5[@]}" --auto-approve
check_rc "apply puts it back (exit 0)" 0
check_eq "o0002 is back to gen=g0" g0 "$(lab_items cli | jq -r '.[] | select(.name == "o0002") | .gen')"
check_lab_matches_state "labcloud objects == state resources"
mo destroy "$FLAT" "${V5[@]}" --auto-approve
check_rc "destroy exits 0" 0
check_eq "labcloud holds zero objects" 0 "$(lab_total)"
lab_stop

# ---------------------------------------------------------------------------
say "sensitive values (labcloud --token)"
rm -f "$MECORCH_STATE" "$MECORCH_STATE"-*
TOKEN="tok-$RANDOM$RANDOM-$RANDOM-s3cr3t"
lab_start --token "$TOKEN"
LAB_TOKEN=$TOKEN
TV=(--var "endpoint=$LAB_URL" --var "token=$TOKEN")
# no_token DESC FILE...: TOKEN appears in none of the files (grep -c says 0).
no_token() {
	local desc=$1 f n total=0
	shift
	for f in "$@"; do
		[ -e "$f" ] || continue
		n=$(grep -ac -- "$TOKEN" "$f")
		total=$((total + n))
	done
	check_eq "$desc" 0 "$total"
}
mo apply "$P/token.lua" "${TV[@]}" --auto-approve
check_rc "apply with the token exits 0" 0
no_token "the token is not in apply's output" "$OUT" "$ERR"
check_eq "labcloud holds the 2 objects" 2 "$(lab_total)"
no_token "the token is not in the state file (nor its WAL)" "$MECORCH_STATE" "$MECORCH_STATE-wal"
mo show
check_rc "show exits 0" 0
check_out_has "show masks the token" "(sensitive)"
no_token "the token is not in show's output" "$OUT" "$ERR"
mo show --json
no_token "the token is not in show --json's output" "$OUT" "$ERR"
check_eq "show --json stores the token prop as a keyed hash" "hmac-sha256" \
	"$(jq -r 'select(.address == "module.vault.object.a") | .props.token["$sensitive"] | split(":")[0]' "$OUT")"
mo output --json
no_token "the token is not in output --json" "$OUT" "$ERR"
mo plan "$P/token.lua" "${TV[@]}" --var gen=g1 --json
check_rc "plan --json exits 0" 0
no_token "the token is not in plan --json's output" "$OUT" "$ERR"
check_eq "plan --json marks the token prop sensitive" true \
	"$(jq -r 'select(.resource_changes) | .resource_changes[0].change.after_sensitive.token' "$OUT")"
mo plan "$P/token.lua" "${TV[@]}" --var gen=g1 --out "$T/token.plan"
check_rc "plan --out exits 0" 0
no_token "the token is not in the saved plan file" "$T/token.plan"
mo show "$T/token.plan"
no_token "the token is not in show SAVED_PLAN's output" "$OUT" "$ERR"
mo apply "$T/token.plan" --auto-approve
check_rc "apply of the saved plan without the token exits 3" 3
check_out_has "the message asks for the token variable" "token"
mo apply "$T/token.plan" --var "token=$TOKEN" --auto-approve
check_rc "apply of the saved plan with the token again exits 0" 0
check_eq "labcloud: both objects updated to gen=g1" "g1" "$(lab_items vault | jq -r '.[].gen' | sort -u)"
mo destroy "$P/token.lua" "${TV[@]}" --var gen=g1 --auto-approve
check_rc "destroy with the token exits 0" 0
check_eq "labcloud holds zero objects after destroy" 0 "$(lab_total)"
no_token "the token is not in the state file (nor its WAL) in the end" "$MECORCH_STATE" "$MECORCH_STATE-wal"
lab_stop
# shellcheck disable=SC2034 # read by lib.sh's lab_* helpers
LAB_TOKEN=

# ---------------------------------------------------------------------------
say "on a terminal: the live status line and colours (script(1), labcloud --latency-ms 1500)"
# tty_run FILE ERRFILE COMMAND...: run COMMAND with its standard streams on a
# pseudo-terminal; FILE receives what the terminal shows.  A non-empty ERRFILE
# takes standard error instead of the terminal.  Sets RC.
tty_run() {
	local file=$1 err=$2 cmd
	shift 2
	cmd=$(printf '%q ' "$@")
	[ -n "$err" ] && cmd+=" 2>$(printf '%q' "$err")"
	script -qec "$cmd" /dev/null </dev/null >"$file" 2>&1
	RC=$?
}
# esc_count FILE: the number of ESC bytes in FILE.
esc_count() { tr -cd '\033' <"$1" | wc -c; }
if ! command -v script >/dev/null; then
	_fail "script(1) is installed (util-linux): the terminal checks need it"
else
	lab_start --latency-ms 1500
	TTYV=(--var "endpoint=$LAB_URL" --var count=1)
	tty_run "$T/tty.out" "" "$MECORCH" apply "$FLAT" "${TTYV[@]}" --var collection=tty1 \
		--state "$T/tty1.db" --auto-approve
	check_eq "apply of one object on a terminal exits 0" 0 "$RC"
	n=$(grep -o '\[0/1\] 1 in flight' "$T/tty.out" | wc -l)
	check_true "the status line is redrawn while the one action runs ($n times '[0/1] 1 in flight')" \
		test "$n" -gt 1
	check_true "the summary follows the status line" grep -q "Apply complete" "$T/tty.out"

	tty_run "$T/tty.out" "$T/tty.err" env -u NO_COLOR "$MECORCH" apply "$FLAT" "${TTYV[@]}" \
		--var collection=tty2 --state "$T/tty2.db" --auto-approve
	check_eq "apply with stdout on a terminal and stderr to a file exits 0" 0 "$RC"
	check_true "stderr got the action's line" grep -q "module.flat.object.o0001: create done" "$T/tty.err"
	check_eq "no ESC byte in the stderr file (colours only on a terminal)" 0 "$(esc_count "$T/tty.err")"
	check_eq "no status line in the stderr file" 0 "$(grep -c 'in flight' "$T/tty.err")"
	check_true "the terminal (stdout) has colours" test "$(esc_count "$T/tty.out")" -gt 0

	tty_run "$T/tty.out" "$T/tty.err" env -u NO_COLOR "$MECORCH" plan --bogus-option
	check_eq "an option error exits 3" 3 "$RC"
	check_true "the error went to the stderr file" grep -q "unknown option '--bogus-option'" "$T/tty.err"
	check_eq "no ESC byte in it although stdout is a terminal" 0 "$(esc_count "$T/tty.err")"

	PV=(plan "$FLAT" "${TTYV[@]}" --refresh=false --state "$T/tty3.db")
	tty_run "$T/tty.out" "" env NO_COLOR=1 "$MECORCH" "${PV[@]}"
	check_eq "plan with NO_COLOR=1 on a terminal exits 0" 0 "$RC"
	check_true "... shows the plan" grep -q "module.flat.object.o0001 will be created" "$T/tty.out"
	check_eq "... without an ESC byte" 0 "$(esc_count "$T/tty.out")"
	tty_run "$T/tty.out" "" env NO_COLOR= "$MECORCH" "${PV[@]}"
	check_true "plan with NO_COLOR set but empty on a terminal has colours" test "$(esc_count "$T/tty.out")" -gt 0
	tty_run "$T/tty.out" "" env -u NO_COLOR "$MECORCH" "${PV[@]}" --no-color
	check_eq "plan --no-color on a terminal has no ESC byte" 0 "$(esc_count "$T/tty.out")"

	tty_run "$T/tty.out" "" "$MECORCH" destroy "$FLAT" "${TTYV[@]}" --var collection=tty1 \
		--state "$T/tty1.db" --auto-approve --json
	check_eq "destroy --json on a terminal exits 0" 0 "$RC"
	check_eq "... draws no status line" 0 "$(grep -c 'in flight,' "$T/tty.out")"
	check_true "... and reports the delete as JSON" grep -q '"type":"ok"' "$T/tty.out"
	mo destroy "$FLAT" "${TTYV[@]}" --var collection=tty2 --state "$T/tty2.db" --auto-approve
	check_rc "destroy with stderr not a terminal exits 0" 0
	check_eq "... draws no status line" 0 "$(grep -c 'in flight' "$ERR")"

	say "lock unlock --json"
	lab_config '{"latency_ms":3000}'
	mo_bg "$T/held.log" apply "$FLAT" --var "endpoint=$LAB_URL" --var count=3 --var collection=held \
		--state "$T/held.db" --parallelism 1 --auto-approve
	HELD=$BG_PID
	lock=$(MECORCH_STATE=$T/held.db wait_for_lock)
	kill -STOP "$HELD"
	lock_id=$(echo "$lock" | jq -r .id)
	mo lock unlock --json "$lock_id" --state "$T/held.db"
	check_rc "lock unlock --json exits 0" 0
	check_eq "it prints one JSON line: type lock_unlock, the id" "lock_unlock $lock_id" \
		"$(jq -r '"\(.type) \(.id)"' "$OUT")"
	kill -CONT "$HELD"
	mo_wait "$HELD"
	check_eq "the apply whose lock was released stops with exit 5" 5 "$BG_RC"
	lab_stop
fi

finish
