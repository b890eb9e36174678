# lib_cloud.sh - the public-cloud lab of the integration tests: the npm
# emulators (s3rver, dynalite, azurite) and the SigV4 verifier in front of
# the AWS ones.  Source it after lib.sh (which provides $T, the checks and
# `mo`); every process started here is tracked by lib.sh, which kills it on
# EXIT.
#
#   cloud_require                 fail unless scripts/install-npm-lab was run
#   free_port                     a free 127.0.0.1 port (bind 0, read it back)
#   wait_port PORT [PID]          until something listens on PORT (bounded, ~20 s)
#   start_s3rver PORT DIR         sets S3RVER_PID
#   start_dynalite PORT DIR       on-disk (LevelDB) store; sets DYNALITE_PID
#   start_azurite PORT DIR        blob service only; sets AZURITE_PID
#   start_proxy NAME UPSTREAM_PORT [verifier options...]
#                                 the SigV4 verifier (or with --no-verify a
#                                 plain proxy); sets PROXY_PID, PROXY_PORT
#   proxy_stat PORT JQ            a value of GET /_verifier/stats
#   proxy_latency PORT MS         set the proxy's per-request delay
#   stop_pid PID [SIGNAL]         signal (default TERM) and reap a process

NPM_BIN=$MO_SOURCE_DIR/examples/lab/npm/node_modules/.bin

# Have lib.sh kill pid $1 on EXIT (with its start time, where lib.sh keeps
# them, so a pid recycled after a stop_pid is never signalled).
_cloud_track() {
	if declare -F _it_track >/dev/null; then
		_it_track "$1"
	else
		IT_PIDS+=("$1")
	fi
}
VERIFIER=$MO_SOURCE_DIR/examples/lab/sigv4-verifier.js

cloud_require() {
	local b
	for b in s3rver dynalite azurite-blob; do
		if [ ! -x "$NPM_BIN/$b" ]; then
			echo "missing $NPM_BIN/$b: run scripts/install-npm-lab (as root)" >&2
			exit 1
		fi
	done
	if ! command -v node >/dev/null; then
		echo "the public-cloud tests need node (scripts/install-npm-lab)" >&2
		exit 1
	fi
}

free_port() {
	node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
		console.log(s.address().port); s.close(); })'
}

# wait_port PORT [PID]: until a TCP connect to 127.0.0.1:PORT succeeds; fails
# early when PID (the server) has exited.
wait_port() {
	local i
	for i in $(seq 1 400); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
			echo "the server for port $1 exited at start" >&2
			return 1
		fi
		sleep 0.05
	done
	echo "nothing listens on port $1" >&2
	return 1
}

stop_pid() {
	kill "-${2:-TERM}" "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

start_s3rver() {
	mkdir -p "$2"
	"$NPM_BIN/s3rver" -d "$2" -a 127.0.0.1 -p "$1" --silent >>"$T/s3rver.log" 2>&1 &
	S3RVER_PID=$!
	_cloud_track "$S3RVER_PID"
	wait_port "$1" "$S3RVER_PID" || { tail -n 5 "$T/s3rver.log" >&2; exit 1; }
}

start_dynalite() {
	mkdir -p "$2"
	"$NPM_BIN/dynalite" --host 127.0.0.1 --port "$1" --path "$2" --createTableMs 200 \
		--deleteTableMs 200 --updateTableMs 200 >>"$T/dynalite.log" 2>&1 &
	DYNALITE_PID=$!
	_cloud_track "$DYNALITE_PID"
	wait_port "$1" "$DYNALITE_PID" || { tail -n 5 "$T/dynalite.log" >&2; exit 1; }
}

start_azurite() {
	mkdir -p "$2"
	"$NPM_BIN/azurite-blob" --blobHost 127.0.0.1 --blobPort "$1" --location "$2" \
		--disableTelemetry --silent >>"$T/azurite.log" 2>&1 &
	AZURITE_PID=$!
	_cloud_track "$AZURITE_PID"
	wait_port "$1" "$AZURITE_PID" || { tail -n 5 "$T/azurite.log" >&2; exit 1; }
}

start_proxy() {
	local name=$1 up=$2 pf i
	shift 2
	pf=$T/$name.port
	rm -f "$pf"
	node "$VERIFIER" --upstream "http://127.0.0.1:$up" --port-file "$pf" "$@" \
		>>"$T/$name.log" 2>&1 &
	PROXY_PID=$!
	_cloud_track "$PROXY_PID"
	for i in $(seq 1 400); do
		[ -s "$pf" ] && break
		if ! kill -0 "$PROXY_PID" 2>/dev/null; then
			echo "$name exited at start:" >&2
			tail -n 5 "$T/$name.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	PROXY_PORT=$(tr -d '[:space:]' <"$pf")
}

proxy_stat() {
	curl -sS --max-time 10 "http://127.0.0.1:$1/_verifier/stats" | jq -r "$2"
}

proxy_latency() {
	curl -sS --max-time 10 -X POST "http://127.0.0.1:$1/_verifier/latency?ms=$2" >/dev/null
}

# The ids of the state's resources of one type, sorted (state file $1).
state_ids() {
	"$MECORCH" show --json --state "$1" </dev/null |
		jq -r --arg t "$2" 'select(.type == $t) | .id' | LC_ALL=C sort
}

