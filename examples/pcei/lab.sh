# lab.sh - the peers of the PCEI lab (plans/pcei-lab.lua) on one machine, for
# examples/pcei/run.sh and tests/integration/test_pcei.sh.  Source it (bash),
# then:
#
#   pcei_lab_up DIR       start every peer this machine can run, under DIR:
#                           public cloud   s3rver behind the SigV4 verifier
#                           interconnect   the fabric emulator (always)
#                           sites          two netns sites with sshd, "edge"
#                                          and "cloud gateway" (root)
#                           edge cloud     podman's Docker API (root, podman)
#                         plus a loopback file server with two builds of the
#                         Location API image tarball (releases "1" and "2").
#                         Writes DIR/lab.json (the plan's variables) and
#                         exports the secrets as MECORCH_VAR_*.  A part that
#                         cannot run is switched off with its reason.
#   pcei_lab_down         stop and remove everything pcei_lab_up started:
#                         podman's storage, the sites, the processes; DIR
#                         unless PCEI_KEEP=1 (idempotent: call it from a trap)
#   pcei_report           one line per part: "on" or "skipped: <why>"
#
# After pcei_lab_up: PCEI_S3 PCEI_SITES PCEI_APP (1 on, 0 skipped) and
# PCEI_S3_WHY PCEI_SITES_WHY PCEI_APP_WHY; PCEI_LAB_ID, PCEI_SHA1/2.
# Peer queries (for checks): pcei_s3_buckets, pcei_s3_objects,
# pcei_containers, pcei_images, pcei_connections, pcei_vxlan_links,
# pcei_site_files, pcei_leftovers (all of them, one "peer: what" a line;
# empty when every peer is empty).
#
# Environment: MECORCH (default build/mecorch), FABRIC (default: beside
# MECORCH), PCEI_SKIP (a list of parts to switch off on purpose:
# "public_cloud", "sites", "app"), PCEI_KEEP=1 (keep DIR).

PCEI_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MECORCH=${MECORCH:-$PCEI_ROOT/build/mecorch}
FABRIC=${FABRIC:-$(dirname "$MECORCH")/fabric}
PCEI_NPM_BIN=$PCEI_ROOT/examples/lab/npm/node_modules/.bin
PCEI_PIDS=()
PCEI_DIR=
PCEI_PODMAN_DIR=
PCEI_SITES_DIR=
PCEI_S3=0 PCEI_SITES=0 PCEI_APP=0
PCEI_S3_WHY='' PCEI_SITES_WHY='' PCEI_APP_WHY=''

_pcei_log() {
	echo "pcei-lab: $*" >&2
}

_pcei_free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Until 127.0.0.1:$1 accepts connections (bounded); fails when pid $2 exited.
_pcei_wait_port() {
	for _ in $(seq 1 400); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# Until file $1 is not empty (bounded); fails when pid $2 exited.
_pcei_wait_file() {
	for _ in $(seq 1 400); do
		[ -s "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

_pcei_skipped() { # _pcei_skipped PART: PART is in PCEI_SKIP
	case " ${PCEI_SKIP:-} " in *" $1 "*) return 0 ;; esac
	return 1
}

_pcei_random() {
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# ---- the parts ------------------------------------------------------------------

_pcei_fabric_up() {
	[ -x "$FABRIC" ] || { _pcei_log "no fabric emulator at $FABRIC (scripts/build)"; return 1; }
	PCEI_FABRIC_TOKEN=$(_pcei_random)
	"$FABRIC" --port-file "$PCEI_DIR/fabric.port" --ports 4 --provision-delay-ms 1000 \
		--deprovision-delay-ms 500 --token "$PCEI_FABRIC_TOKEN" >"$PCEI_DIR/fabric.log" 2>&1 &
	PCEI_PIDS+=($!)
	_pcei_wait_file "$PCEI_DIR/fabric.port" $! || { _pcei_log "the fabric emulator did not start"; return 1; }
	PCEI_FABRIC_URL=http://127.0.0.1:$(tr -d '[:space:]' <"$PCEI_DIR/fabric.port")
}

_pcei_s3_up() {
	local port pid
	if _pcei_skipped public_cloud; then
		PCEI_S3_WHY="switched off (PCEI_SKIP)"
		return 0
	fi
	if ! command -v node >/dev/null || [ ! -x "$PCEI_NPM_BIN/s3rver" ]; then
		PCEI_S3_WHY="node or s3rver is not installed (scripts/install-npm-lab)"
		return 0
	fi
	port=$(_pcei_free_port)
	"$PCEI_NPM_BIN/s3rver" -d "$PCEI_DIR/s3data" -a 127.0.0.1 -p "$port" --silent \
		>"$PCEI_DIR/s3rver.log" 2>&1 &
	pid=$!
	PCEI_PIDS+=("$pid")
	if ! _pcei_wait_port "$port" "$pid"; then
		PCEI_S3_WHY="s3rver did not start: $(tail -n 1 "$PCEI_DIR/s3rver.log")"
		return 0
	fi
	PCEI_S3_DIRECT=http://127.0.0.1:$port
	PCEI_S3_SECRET=$(_pcei_random)
	node "$PCEI_ROOT/examples/lab/sigv4-verifier.js" --upstream "$PCEI_S3_DIRECT" \
		--credentials "S3RVER:$PCEI_S3_SECRET" --port-file "$PCEI_DIR/verifier.port" \
		>"$PCEI_DIR/verifier.log" 2>&1 &
	pid=$!
	PCEI_PIDS+=("$pid")
	if ! _pcei_wait_file "$PCEI_DIR/verifier.port" "$pid"; then
		PCEI_S3_WHY="the SigV4 verifier did not start: $(tail -n 1 "$PCEI_DIR/verifier.log")"
		return 0
	fi
	PCEI_S3_ENDPOINT=http://127.0.0.1:$(tr -d '[:space:]' <"$PCEI_DIR/verifier.port")
	PCEI_S3=1
}

# The two releases of the application: build-image.sh's tarball, and the
# same with one more file (another SHA-256), served on loopback.
_pcei_artefacts_up() {
	local www=$PCEI_DIR/www port pid
	mkdir -p "$www" "$PCEI_DIR/v2"
	if ! "$PCEI_ROOT/examples/apps/location-api/build-image.sh" -o "$www/location-api-1.tar" \
		>"$PCEI_DIR/build-image.log" 2>&1; then
		PCEI_ARTEFACT_WHY="the image does not build: $(tail -n 1 "$PCEI_DIR/build-image.log")"
		return 1
	fi
	tar -C "$PCEI_DIR/v2" -xf "$www/location-api-1.tar"
	echo 2 >"$PCEI_DIR/v2/etc/location-api-version"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
		-C "$PCEI_DIR/v2" -cf "$www/location-api-2.tar" .
	PCEI_SHA1=$(sha256sum "$www/location-api-1.tar" | cut -d' ' -f1)
	PCEI_SHA2=$(sha256sum "$www/location-api-2.tar" | cut -d' ' -f1)
	port=$(_pcei_free_port)
	python3 -m http.server "$port" --bind 127.0.0.1 --directory "$www" >"$PCEI_DIR/www.log" 2>&1 &
	pid=$!
	PCEI_PIDS+=("$pid")
	if ! _pcei_wait_port "$port" "$pid"; then
		PCEI_ARTEFACT_WHY="the file server did not start: $(tail -n 1 "$PCEI_DIR/www.log")"
		return 1
	fi
	PCEI_WWW=http://127.0.0.1:$port
}

_pcei_sites_up() {
	if _pcei_skipped sites; then
		PCEI_SITES_WHY="switched off (PCEI_SKIP)"
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		PCEI_SITES_WHY="network namespaces, a lab user and sshd need root"
		return 0
	fi
	PCEI_SITES_DIR=$PCEI_DIR/sites
	mkdir -p "$PCEI_SITES_DIR"
	chmod 755 "$PCEI_DIR" "$PCEI_SITES_DIR"
	if ! "$PCEI_ROOT/examples/lab/sites.sh" up 2 "$PCEI_SITES_DIR" >"$PCEI_DIR/sites.log" 2>&1; then
		PCEI_SITES_WHY="the netns sites do not come up: $(tail -n 1 "$PCEI_DIR/sites.log")"
		return 0
	fi
	# shellcheck disable=SC1091
	. "$PCEI_SITES_DIR/sites.env"
	if [ "$LAB_SUDO" != 1 ]; then
		PCEI_SITES_WHY="sudo is missing (scripts/install-ssh-lab): the overlay needs it"
	elif ! su -s /bin/sh "$LAB_USER" -c "test -w '$SITE1_ROOT'" >/dev/null 2>&1; then
		# the sites' files are written as the lab user, through DIR's parents
		PCEI_SITES_WHY="the lab user cannot write under $PCEI_DIR (a parent directory is closed to others; use a directory under /tmp)"
	else
		PCEI_SITES=1
		return 0
	fi
	"$PCEI_ROOT/examples/lab/sites.sh" down "$PCEI_SITES_DIR" >/dev/null 2>&1 || true
}

_pcei_app_up() {
	local probe=$PCEI_DIR/probe tool
	if _pcei_skipped app; then
		PCEI_APP_WHY="switched off (PCEI_SKIP)"
		return 0
	fi
	if [ "$PCEI_S3" != 1 ]; then
		PCEI_APP_WHY="its artefact comes from the public cloud, which is skipped"
		return 0
	fi
	if [ -n "${PCEI_ARTEFACT_WHY:-}" ]; then
		PCEI_APP_WHY=$PCEI_ARTEFACT_WHY
		return 0
	fi
	if [ "$(id -u)" -ne 0 ]; then
		PCEI_APP_WHY="the lab's podman (private storage, runc) needs root"
		return 0
	fi
	for tool in podman runc; do
		if ! command -v "$tool" >/dev/null; then
			PCEI_APP_WHY="$tool is not installed (scripts/install-edge-lab)"
			return 0
		fi
	done
	PCEI_PODMAN_DIR=$PCEI_DIR/podman
	if ! PCEI_PODMAN_SOCK=$("$PCEI_ROOT/examples/lab/podman.sh" start "$PCEI_PODMAN_DIR" 2>"$PCEI_DIR/podman-start.log"); then
		PCEI_APP_WHY="the podman service does not start: $(tail -n 1 "$PCEI_DIR/podman-start.log")"
		return 0
	fi
	# Can podman run a container here at all?
	mkdir -p "$probe/bin"
	cp /bin/busybox "$probe/bin/busybox" 2>/dev/null || true
	ln -sf busybox "$probe/bin/true"
	tar -C "$probe" -cf "$PCEI_DIR/probe.tar" .
	if ! "$PCEI_ROOT/examples/lab/podman.sh" podman "$PCEI_PODMAN_DIR" import -q "$PCEI_DIR/probe.tar" \
		localhost/pcei-probe:1 >"$PCEI_DIR/probe.log" 2>&1 ||
		! "$PCEI_ROOT/examples/lab/podman.sh" podman "$PCEI_PODMAN_DIR" run --rm --network none \
			localhost/pcei-probe:1 /bin/true >>"$PCEI_DIR/probe.log" 2>&1; then
		PCEI_APP_WHY="podman cannot run a container here: $(tail -n 1 "$PCEI_DIR/probe.log")"
		return 0
	fi
	"$PCEI_ROOT/examples/lab/podman.sh" podman "$PCEI_PODMAN_DIR" rmi -f localhost/pcei-probe:1 \
		>/dev/null 2>&1 || true
	PCEI_APP=1
}

# DIR/lab.json: every variable of plans/pcei-lab.lua but the secrets, which
# go to the environment (MECORCH_VAR_*), out of files and command lines.
_pcei_write_vars() {
	local releases='{}'
	if [ -n "${PCEI_WWW:-}" ]; then
		releases=$(jq -n --arg w "$PCEI_WWW" --arg s1 "$PCEI_SHA1" --arg s2 "$PCEI_SHA2" \
			'{"1": {url: "\($w)/location-api-1.tar", sha256: $s1},
			  "2": {url: "\($w)/location-api-2.tar", sha256: $s2}}')
	fi
	jq -n \
		--argjson s3 "$([ "$PCEI_S3" = 1 ] && echo true || echo false)" \
		--argjson sites "$([ "$PCEI_SITES" = 1 ] && echo true || echo false)" \
		--argjson app "$([ "$PCEI_APP" = 1 ] && echo true || echo false)" \
		--arg lab_id "$PCEI_LAB_ID" \
		--arg s3_endpoint "${PCEI_S3_ENDPOINT:-}" \
		--arg s3_public "${PCEI_S3_DIRECT:-}" \
		--argjson releases "$releases" \
		--arg fabric "$PCEI_FABRIC_URL" \
		--arg user "${LAB_USER:-}" --arg key "${LAB_KEY:-}" \
		--arg edge_host "${SITE1_ADDR:-}" --arg edge_fp "${SITE1_FP:-}" --arg edge_root "${SITE1_ROOT:-}" \
		--arg edge_ns "${SITE1_NS:-}" \
		--arg cgw_host "${SITE2_ADDR:-}" --arg cgw_fp "${SITE2_FP:-}" --arg cgw_root "${SITE2_ROOT:-}" \
		--arg sock "${PCEI_PODMAN_SOCK:-}" --argjson app_port "$PCEI_APP_PORT" \
		'{enable_public_cloud: $s3, enable_sites: $sites, enable_app: $app, lab_id: $lab_id,
		  s3_endpoint: $s3_endpoint, s3_public_endpoint: $s3_public, releases: $releases,
		  fabric_endpoint: $fabric, fabric_poll_ms: 250,
		  site_user: $user, site_key_file: $key,
		  edge_host: $edge_host, edge_fp: $edge_fp, edge_root: $edge_root, edge_netns: $edge_ns,
		  cgw_host: $cgw_host, cgw_fp: $cgw_fp, cgw_root: $cgw_root,
		  podman_socket: $sock, app_port: $app_port}' >"$PCEI_DIR/lab.json"
	export MECORCH_VAR_s3_access_key=S3RVER # the one access key id s3rver knows
	export MECORCH_VAR_s3_secret_key=${PCEI_S3_SECRET:-unused}
	export MECORCH_VAR_fabric_token=$PCEI_FABRIC_TOKEN
}

pcei_lab_up() {
	local tool
	mkdir -p "$1"
	PCEI_DIR=$(cd "$1" && pwd)
	PCEI_LAB_ID=pcei-$$
	PCEI_APP_PORT=$(_pcei_free_port)
	for tool in python3 jq curl; do
		command -v "$tool" >/dev/null || { _pcei_log "$tool is missing (scripts/install-deps)"; return 1; }
	done
	_pcei_fabric_up || return 1
	_pcei_s3_up
	if [ "$PCEI_S3" = 1 ]; then
		_pcei_artefacts_up || true
	fi
	_pcei_sites_up
	_pcei_app_up
	_pcei_write_vars
}

pcei_lab_down() {
	local p
	if [ -n "$PCEI_PODMAN_DIR" ] && [ -d "$PCEI_PODMAN_DIR" ]; then
		"$PCEI_ROOT/examples/lab/podman.sh" clean "$PCEI_PODMAN_DIR" >/dev/null 2>&1 || true
	fi
	if [ -n "$PCEI_SITES_DIR" ] && [ -f "$PCEI_SITES_DIR/lab.state" ]; then
		"$PCEI_ROOT/examples/lab/sites.sh" down "$PCEI_SITES_DIR" >/dev/null 2>&1 ||
			"$PCEI_ROOT/examples/lab/sites.sh" down "$PCEI_SITES_DIR" >&2 || true
	fi
	for p in "${PCEI_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${PCEI_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	PCEI_PIDS=()
	if [ -n "$PCEI_DIR" ] && [ "${PCEI_KEEP:-0}" != 1 ]; then
		rm -rf "$PCEI_DIR"
	fi
	PCEI_PODMAN_DIR='' PCEI_SITES_DIR='' PCEI_DIR=''
}

pcei_report() {
	_pcei_line() {
		if [ "$2" = 1 ]; then
			printf '  %-34s on\n' "$1"
		else
			printf '  %-34s skipped: %s\n' "$1" "$3"
		fi
	}
	_pcei_line "public cloud (S3, the artefact)" "$PCEI_S3" "$PCEI_S3_WHY"
	_pcei_line "interconnection provider (fabric)" 1 ""
	_pcei_line "sites and overlay (netns, SSH)" "$PCEI_SITES" "$PCEI_SITES_WHY"
	_pcei_line "edge cloud and MEC app (podman)" "$PCEI_APP" "$PCEI_APP_WHY"
}

# ---- peer queries ---------------------------------------------------------------

# Straight to s3rver (it checks no signature, but wants one for listings).
_pcei_s3_direct() {
	curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "S3RVER:direct" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
pcei_s3_buckets() {
	[ "$PCEI_S3" = 1 ] || return 0
	_pcei_s3_direct "$PCEI_S3_DIRECT/" | grep -o '<Name>[^<]*</Name>' | sed 's/<[^>]*>//g' | LC_ALL=C sort
}
pcei_s3_objects() {
	local b
	for b in $(pcei_s3_buckets); do
		_pcei_s3_direct "$PCEI_S3_DIRECT/$b?list-type=2" | grep -o '<Key>[^<]*</Key>' |
			sed "s/<[^>]*>//g; s|^|$b/|"
	done | LC_ALL=C sort
}
_pcei_dapi() {
	curl -sS --max-time 30 --unix-socket "$PCEI_PODMAN_SOCK" "$@"
}
# "name state" of the containers with this lab's label, any state.
pcei_containers() {
	[ "$PCEI_APP" = 1 ] || return 0
	_pcei_dapi -G "http://d/v1.41/containers/json" --data-urlencode all=true \
		--data-urlencode "filters={\"label\":[\"pcei.lab=$PCEI_LAB_ID\"]}" |
		jq -r '.[] | "\(.Names[0] | ltrimstr("/")) \(.State)"' | LC_ALL=C sort
}
# Ids of the images with this lab's label.
pcei_images() {
	[ "$PCEI_APP" = 1 ] || return 0
	_pcei_dapi -G "http://d/v1.41/images/json" --data-urlencode all=true |
		jq -r --arg l "$PCEI_LAB_ID" '.[] | select((.Labels // {})["pcei.lab"] == $l) | .Id' | LC_ALL=C sort
}
# "id state bandwidth" of the provider's connections.
pcei_connections() {
	curl -sS --max-time 10 -H "Authorization: Bearer $PCEI_FABRIC_TOKEN" "$PCEI_FABRIC_URL/v1/connections" |
		jq -r '.items[] | "\(.id) \(.state) \(.bandwidth_mbps)"'
}
# "ns link" of every VXLAN link in the two sites.
pcei_vxlan_links() {
	local ns
	[ "$PCEI_SITES" = 1 ] || return 0
	for ns in "$SITE1_NS" "$SITE2_NS"; do
		ip -n "$ns" -o link show type vxlan 2>/dev/null | awk -F': ' -v ns="$ns" '{sub(/@.*/, "", $2); print ns, $2}'
	done
}
pcei_site_files() {
	[ "$PCEI_SITES" = 1 ] || return 0
	find "$SITE1_ROOT" "$SITE2_ROOT" -type f 2>/dev/null | LC_ALL=C sort
}
# Everything any peer still holds, one "peer: what" a line.
pcei_leftovers() {
	pcei_s3_buckets | sed 's/^/s3 bucket: /'
	pcei_s3_objects | sed 's/^/s3 object: /'
	pcei_containers | sed 's/^/podman container: /'
	pcei_images | sed 's/^/podman image: /'
	pcei_connections | sed 's/^/fabric connection: /'
	pcei_vxlan_links | sed 's/^/vxlan link: /'
	pcei_site_files | sed 's/^/site file: /'
}
