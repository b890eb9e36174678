# lib_api.sh - helpers of the API server tests (test_api*.sh), on top of lib.sh.
#
#   fed_start                      start examples/lab/federator; FED_URL, FED_PID
#   api_config FILE [extra jq]     write a server config (zones on $LAB_URL, tokens
#                                  TA (tenant a), TB (tenant b), TO (operator));
#                                  local appPkgPaths (git+file://) open to every role
#   api_start CONFIG               start `mecorch serve`; API (base URL), API_PID
#   api_stop [SIG]                 stop it (TERM by default) and wait
#   call TOKEN METHOD PATH [BODY] [curl args...]
#                                  one request; S = status, body in $T/body
#   body JQ                        a value of the last body
#   wait_for DESC SECONDS COMMAND  poll (every 0.1 s) until COMMAND succeeds, for at
#                                  most SECONDS (give generous bounds: a slow machine
#                                  must not fail the check)
#   op_state ID / pkg_state ID     operationState / onboardingState (as TA)
#   make_pkg_repo DIR              the example package as a git repo; prints the digest

FEDERATOR=${FEDERATOR:-$(dirname "$MECORCH")/federator}
if [ ! -x "$FEDERATOR" ]; then
	echo "missing $FEDERATOR (build the federator target, or set FEDERATOR)" >&2
	exit 1
fi
TA=tenant-a-token-0001
TB=tenant-b-token-0002
TO=operator-token-0003

fed_start() {
	local pf=$T/fed.port i
	rm -f "$pf"
	"$FEDERATOR" --port-file "$pf" --token federator-secret >>"$T/federator.log" 2>&1 &
	FED_PID=$!
	IT_PIDS+=("$FED_PID")
	for i in $(seq 1 1200); do # up to 60 s
		[ -s "$pf" ] && break
		if ! kill -0 "$FED_PID" 2>/dev/null; then
			echo "the federator exited at start:" >&2
			tail -n 5 "$T/federator.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	if [ ! -s "$pf" ]; then
		echo "the federator did not write its port file" >&2
		exit 1
	fi
	FED_PORT=$(tr -d '[:space:]' <"$pf")
	FED_URL=http://127.0.0.1:$FED_PORT
}

api_config() {
	local file=$1 extra=${2:-.}
	jq -n --arg lab "$LAB_URL" --arg fed "$FED_URL/fed_enablement/v1" --arg data "$T/data" \
		--arg ta "$TA" --arg tb "$TB" --arg to "$TO" '{
		listen: "127.0.0.1:0", dataDir: $data, httpThreads: 4, workers: 2, resumeDelayMs: 1500,
		system: {systemName: "mecorch-it", systemProvider: "lab.example"},
		zones: [
			{id: "zone-paris", name: "Paris edge", countryCode: "FR",
			 geolocation: {latitude: 48.8566, longitude: 2.3522}, domains: {edge: {endpoint: $lab}}},
			{id: "zone-berlin", name: "Berlin edge", countryCode: "DE",
			 geolocation: {latitude: 52.52, longitude: 13.405}, domains: {edge: {endpoint: $lab}}}
		],
		federator: {url: $fed, token: "federator-secret", retryBaseMs: 100, retryMaxMs: 2000},
		tokens: [
			{token: $ta, tenant: "tenant-a", role: "federator"},
			{token: $tb, tenant: "tenant-b", role: "tenant"},
			{token: $to, tenant: "ops", role: "operator"}
		],
		limits: {maxBodyBytes: 65536, maxPackageBytes: 1048576, localPackageSources: true},
		notifications: {retryBaseMs: 100, retryMaxMs: 1000, timeoutMs: 2000}
	} | '"$extra" >"$file"
}

api_start() {
	local pf=$T/api.port i
	rm -f "$pf"
	"$MECORCH" serve --config "$1" --port-file "$pf" >>"$T/serve.log" 2>&1 &
	API_PID=$!
	IT_PIDS+=("$API_PID")
	for i in $(seq 1 1200); do # up to 60 s
		[ -s "$pf" ] && break
		if ! kill -0 "$API_PID" 2>/dev/null; then
			echo "mecorch serve exited at start:" >&2
			tail -n 5 "$T/serve.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	if [ ! -s "$pf" ]; then
		echo "mecorch serve did not write its port file" >&2
		exit 1
	fi
	API=http://127.0.0.1:$(tr -d '[:space:]' <"$pf")
}

api_stop() {
	kill -"${1:-TERM}" "$API_PID" 2>/dev/null
	wait "$API_PID" 2>/dev/null
}

call() {
	local tok=$1 method=$2 path=$3 data=${4-}
	shift 3
	[ $# -gt 0 ] && shift
	local args=(-s -o "$T/body" -w '%{http_code}' -X "$method" --max-time 30)
	[ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	S=$(curl "${args[@]}" "$@" "$API$path")
}

body() { jq -r "$1" "$T/body" 2>/dev/null; }

wait_for() {
	local desc=$1 secs=$2 end
	shift 2
	end=$((SECONDS + secs))
	while :; do
		if "$@"; then
			_pass "$desc"
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && break
		sleep 0.1
	done
	_fail "$desc" "still not true after ${secs}s: $*"
	return 1
}

op_state() { curl -s -H "Authorization: Bearer ${2:-$TA}" "$API/app_lcm/v1/app_lcm_op_occs/$1" | jq -r .operationState; }
pkg_state() { curl -s -H "Authorization: Bearer ${2:-$TA}" "$API/app_pkgm/v1/app_packages/$1" | jq -r .onboardingState; }
op_is() { [ "$(op_state "$1" "${3:-$TA}")" = "$2" ]; }
pkg_is() { [ "$(pkg_state "$1" "${3:-$TA}")" = "$2" ]; }

make_pkg_repo() {
	"$MO_SOURCE_DIR/examples/serve/make-package.sh" git "$1"
}

# Notifications the federator received at /notify/$1, as compact JSON lines.
received() {
	curl -s "$FED_URL/_notifications" | jq -c --arg p "/notify/$1" '.items[] | select(.path == $p) | .body'
}
