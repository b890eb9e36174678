# lib_api.sh - helpers of the API server tests (test_api*.sh), on top of lib.sh.
#
#   fed_start [PORT]               start examples/lab/federator (on PORT when given,
#                                  else on a free port); FED_URL, FED_PORT, FED_PID;
#                                  with PORT, fails (1) when it could not listen there
#   recv_fail / recv_ok            the federator's notification receiver answers 503
#                                  to every notification (recording none) / 2xx again
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
#   received PATH [FROM]           notifications received at /notify/PATH (from the
#                                  FROM-th one the receiver recorded, 0 first)
#   received_count                 how many notifications the receiver recorded
#   fed_systems_is N               the federator holds N registered systems
#   metric NAME                    the value of a sample of the server's /metrics
#   www_start DIR                  an HTTP server (python3) of the files in DIR on a
#                                  free port; WWW_URL.  GET /F waits while DIR/F.hold
#                                  exists; each request's path is appended to
#                                  $T/www.requests before that wait
#   gitd_start DIR                 a git:// server (python3 + git upload-pack) of the
#                                  bare repositories in DIR on a free port; GITD_URL.
#                                  A connection for R.git waits while DIR/R.git.hold
#                                  exists; each is appended to $T/gitd.requests first
#   pkg_track ID TOKEN FILE        in the background, append each onboardingState the
#                                  package shows to FILE (one line per change), until
#                                  ONBOARDED; `tracked FILE` prints them on one line

FEDERATOR=${FEDERATOR:-$(dirname "$MECORCH")/federator}
if [ ! -x "$FEDERATOR" ]; then
	echo "missing $FEDERATOR (build the federator target, or set FEDERATOR)" >&2
	exit 1
fi
TA=tenant-a-token-0001
TB=tenant-b-token-0002
TO=operator-token-0003

fed_start() {
	local pf=$T/fed.port i port=${1:-}
	rm -f "$pf"
	"$FEDERATOR" --listen "127.0.0.1:${port:-0}" --port-file "$pf" --token federator-secret \
		>>"$T/federator.log" 2>&1 &
	FED_PID=$!
	_it_track "$FED_PID"
	for i in $(seq 1 1200); do # up to 60 s
		[ -s "$pf" ] && break
		if ! kill -0 "$FED_PID" 2>/dev/null; then
			# a given port another process took: the caller picks another
			[ -n "$port" ] && return 1
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
	[ -n "$port" ] && [ "$FED_PORT" != "$port" ] && return 1
	FED_URL=http://127.0.0.1:$FED_PORT
}

# The receiver (POST /notify/...) answers 503 to the next billion
# notifications, recording none of them; recv_ok ends that.
recv_fail() {
	curl -sf -X PUT "$FED_URL/_config" -d '{"notifyStatus":503,"notifyFailures":1000000000}' >/dev/null
}
recv_ok() {
	curl -sf -X PUT "$FED_URL/_config" -d '{"notifyFailures":0}' >/dev/null
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
	local pf=$T/api.port
	rm -f "$pf"
	"$MECORCH" serve --config "$1" --port-file "$pf" >>"$T/serve.log" 2>&1 &
	API_PID=$!
	IT_PIDS+=("$API_PID")
	API=http://127.0.0.1:$(read_port_file "mecorch serve" "$API_PID" "$pf" "$T/serve.log") || exit 1
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

# Notifications the federator received at /notify/$1, as compact JSON lines,
# from the $2-th one it recorded (any path; 0, the first, by default).
received() {
	curl -s "$FED_URL/_notifications" |
		jq -c --arg p "/notify/$1" --argjson from "${2:-0}" '.items[$from:][] | select(.path == $p) | .body'
}

received_count() { curl -s "$FED_URL/_notifications" | jq .count; }

fed_systems_is() { [ "$(curl -s "$FED_URL/_stats" | jq .systems)" = "$1" ]; }

# The value of the sample NAME (with its labels, if any) in GET /metrics.
metric() {
	curl -s "$API/metrics" | awk -v n="$1" '$1 == n { print $2; f = 1 } END { exit !f }'
}

# _py_start NAME SCRIPT ARGS...: run a python3 server script that binds
# 127.0.0.1:0 and writes its port to $T/NAME.port once listening; PY_PORT.
_py_start() {
	local name=$1 script=$2 pf=$T/$1.port i pid
	shift 2
	rm -f "$pf"
	python3 -u -c "$script" "$pf" "$@" >>"$T/$name.log" 2>&1 &
	pid=$!
	_it_track "$pid"
	PY_PORT=$(read_port_file "$name" "$pid" "$pf" "$T/$name.log") || exit 1
}

# Both servers write the port file (atomically) after listen(), so a
# connection succeeds from then on; a hold ends by itself after 10 minutes
# should a test die holding it.
_WWW_PY='
import http.server, os, sys, time, urllib.parse
portfile, root, log = sys.argv[1:4]
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def do_GET(self):
        rel = urllib.parse.urlsplit(self.path).path.lstrip("/")
        with open(log, "a") as f:
            f.write("/" + rel + "\n")
        end = time.monotonic() + 600
        while os.path.exists(os.path.join(root, rel + ".hold")) and time.monotonic() < end:
            time.sleep(0.05)
        super().do_GET()
    def log_message(self, *a):
        pass
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(portfile + ".tmp", "w") as f:
    f.write(str(httpd.server_address[1]))
os.rename(portfile + ".tmp", portfile)
httpd.serve_forever()
'

www_start() {
	mkdir -p "$1"
	: >"$T/www.requests"
	_py_start www "$_WWW_PY" "$(cd "$1" && pwd)" "$T/www.requests"
	WWW_URL=http://127.0.0.1:$PY_PORT
}

# git:// (git daemon protocol): the request is one pkt-line,
# "git-upload-pack /R.git\0host=...\0[\0version=N\0]"; the connection is
# then handed to `git upload-pack` as git daemon does.
_GITD_PY='
import os, socket, subprocess, sys, threading, time
portfile, root, log = sys.argv[1:4]
def exact(c, n):
    b = b""
    while len(b) < n:
        x = c.recv(n - len(b))
        if not x:
            raise EOFError
        b += x
    return b
def serve(c):
    try:
        req = exact(c, int(exact(c, 4), 16) - 4)
        cmd, _, rest = req.partition(b" ")
        parts = rest.split(b"\0")
        path = parts[0].decode()
        repo = os.path.normpath(os.path.join(root, path.lstrip("/")))
        with open(log, "a") as f:
            f.write(cmd.decode() + " " + path + "\n")
        end = time.monotonic() + 600
        while os.path.exists(repo + ".hold") and time.monotonic() < end:
            time.sleep(0.05)
        if cmd != b"git-upload-pack" or not repo.startswith(root + "/") or not os.path.isdir(repo):
            return
        env = dict(os.environ)
        for p in parts[1:]:
            if p.startswith(b"version="):
                env["GIT_PROTOCOL"] = p.decode()
        subprocess.run(["git", "upload-pack", "--strict", repo], stdin=c.fileno(), stdout=c.fileno(),
                       stderr=subprocess.DEVNULL, env=env)
    except (OSError, EOFError, ValueError):
        pass
    finally:
        c.close()
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(64)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'

gitd_start() {
	mkdir -p "$1"
	: >"$T/gitd.requests"
	_py_start gitd "$_GITD_PY" "$(cd "$1" && pwd)" "$T/gitd.requests"
	GITD_URL=git://127.0.0.1:$PY_PORT
}

pkg_track() {
	local id=$1 tok=$2 file=$3
	: >"$file"
	(
		last='' end=$((SECONDS + 600))
		while [ "$SECONDS" -lt "$end" ]; do
			s=$(pkg_state "$id" "$tok")
			case $s in
			'' | null) ;;
			"$last") ;;
			*)
				echo "$s" >>"$file"
				last=$s
				;;
			esac
			[ "$s" = ONBOARDED ] && break
			sleep 0.05
		done
	) &
	_it_track $!
}

tracked() { tr '\n' ' ' <"$1" | sed 's/ $//'; }
