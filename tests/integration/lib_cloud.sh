# lib_cloud.sh - the public-cloud lab of the integration tests: the npm
# emulators (s3rver, dynalite, azurite) and the SigV4 verifier in front of
# the AWS ones.  Source it after lib.sh (which provides $T, the checks and
# `mo`); every process started here is tracked by lib.sh, which kills it on
# EXIT.
#
#   cloud_require                 fail unless scripts/install-npm-lab was run
#   free_port                     a free 127.0.0.1 port (it_free_port of lib.sh)
#   wait_port PORT [PID]          until PID (or, without PID, anything) listens on
#                                 PORT (bounded, 120 s)
#   start_s3rver PORT DIR         sets S3RVER_PID, S3RVER_PORT
#   start_dynalite PORT DIR       on-disk (LevelDB) store; sets DYNALITE_PID, DYNALITE_PORT
#   start_azurite PORT DIR        blob service only; sets AZURITE_PID, AZURITE_PORT
#                                 PORT "": a free port of their choosing (another one
#                                 when the server could not take it); a PORT given (a
#                                 restart) is used or the test stops
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
	it_free_port
}

# wait_port PORT [PID]: with PID, until that process (or a child of it)
# listens on PORT, failing early when it has exited (the port was taken, or
# it could not start); without PID, until a TCP connect to 127.0.0.1:PORT
# succeeds.  Bounded (120 s: the npm emulators start slowly on a loaded
# machine).
wait_port() {
	local end=$((SECONDS + 120))
	if [ -n "${2:-}" ]; then
		wait_listen "$1" "$2" 120 && return 0
		if kill -0 "$2" 2>/dev/null; then
			echo "the server for port $1 does not listen on it" >&2
		else
			echo "the server for port $1 exited at start" >&2
		fi
		return 1
	fi
	while :; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && break
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

# _cloud_serve NAME PORT LAUNCHER: LAUNCHER P starts the server on port P in
# the background and sets _CLOUD_PID; wait until that process listens on P.
# With PORT empty, P is a free port, and another one when the server could
# not take it (up to 5 tries); with PORT given, only that one.  Sets
# _CLOUD_PORT; exits the test when the server does not come up.
_cloud_serve() {
	local name=$1 want=$2 launch=$3 try port
	for try in 1 2 3 4 5; do
		port=${want:-$(free_port)}
		"$launch" "$port"
		_cloud_track "$_CLOUD_PID"
		if wait_port "$port" "$_CLOUD_PID"; then
			_CLOUD_PORT=$port
			return 0
		fi
		stop_pid "$_CLOUD_PID" KILL
		[ -n "$want" ] && break
	done
	echo "$name did not start" >&2
	tail -n 5 "$T/$name.log" >&2
	exit 1
}

_launch_s3rver() {
	"$NPM_BIN/s3rver" -d "$_CLOUD_DIR" -a 127.0.0.1 -p "$1" --silent >>"$T/s3rver.log" 2>&1 &
	_CLOUD_PID=$!
}
start_s3rver() {
	mkdir -p "$2"
	_CLOUD_DIR=$2
	_cloud_serve s3rver "$1" _launch_s3rver
	S3RVER_PID=$_CLOUD_PID
	S3RVER_PORT=$_CLOUD_PORT
}

_launch_dynalite() {
	"$NPM_BIN/dynalite" --host 127.0.0.1 --port "$1" --path "$_CLOUD_DIR" --createTableMs 200 \
		--deleteTableMs 200 --updateTableMs 200 >>"$T/dynalite.log" 2>&1 &
	_CLOUD_PID=$!
}
start_dynalite() {
	mkdir -p "$2"
	_CLOUD_DIR=$2
	_cloud_serve dynalite "$1" _launch_dynalite
	DYNALITE_PID=$_CLOUD_PID
	DYNALITE_PORT=$_CLOUD_PORT
}

_launch_azurite() {
	"$NPM_BIN/azurite-blob" --blobHost 127.0.0.1 --blobPort "$1" --location "$_CLOUD_DIR" \
		--disableTelemetry --silent >>"$T/azurite.log" 2>&1 &
	_CLOUD_PID=$!
}
start_azurite() {
	mkdir -p "$2"
	_CLOUD_DIR=$2
	_cloud_serve azurite "$1" _launch_azurite
	AZURITE_PID=$_CLOUD_PID
	AZURITE_PORT=$_CLOUD_PORT
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
	PROXY_PORT=$(read_port_file "$name" "$PROXY_PID" "$pf" "$T/$name.log" 120) || exit 1
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

