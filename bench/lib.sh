# lib.sh - helpers shared by the benchmark scripts (sourced, not run).
#
# Environment:
#   MECORCH    the mecorch binary   (default: build/mecorch under the repo)
#   LABCLOUD   the labcloud binary  (default: build/labcloud under the repo)
#   RUNS       runs per measurement, the median is reported (default 5)
# Benchmarks want an optimised build (the default RelWithDebInfo):
#   cmake -S . -B build && cmake --build build --target mecorch labcloud
# Everything runs on 127.0.0.1 in a temporary directory removed on exit.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
MECORCH=${MECORCH:-$ROOT/build/mecorch}
LABCLOUD=${LABCLOUD:-$ROOT/build/labcloud}
RUNS=${RUNS:-5}
WORK=$(mktemp -d /tmp/mecorch-bench.XXXXXX)
LABCLOUD_PID=

bench_cleanup() {
	labcloud_stop
	rm -rf "$WORK"
}
trap bench_cleanup EXIT

die() {
	echo "error: $*" >&2
	exit 1
}

# Install a Debian package providing `cmd` if cmd is missing (needs root).
need() {
	local cmd=$1 pkg=$2
	command -v "$cmd" > /dev/null 2>&1 && return 0
	[ -x "$cmd" ] && return 0
	echo "installing $pkg for $cmd" >&2
	apt-get install -y "$pkg" > /dev/null 2>&1 || die "$cmd is missing and 'apt-get install $pkg' failed"
}

need_mecorch() {
	[ -x "$MECORCH" ] || die "no mecorch at $MECORCH: build it (cmake -S $ROOT -B $ROOT/build && cmake --build $ROOT/build) or set MECORCH"
	need /usr/bin/time time
	need jq jq
}

# Median of the numbers on stdin, one per line.
median() {
	sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Seconds since the epoch with nanoseconds.
now() {
	date +%s.%N
}

# Run a command under /usr/bin/time; its stdout goes to $1, the figures
# "wall_s user_s sys_s maxrss_kb" to $2.
timed() {
	local out=$1 fig=$2
	shift 2
	/usr/bin/time -f '%e %U %S %M' -o "$fig" "$@" > "$out"
}

# Start labcloud on a free port of 127.0.0.1 with extra flags; sets
# LABCLOUD_URL.
labcloud_start() {
	[ -x "$LABCLOUD" ] || die "no labcloud at $LABCLOUD: build it or set LABCLOUD"
	rm -f "$WORK/labcloud.port"
	"$LABCLOUD" --listen 127.0.0.1:0 --port-file "$WORK/labcloud.port" "$@" \
		> "$WORK/labcloud.log" 2>&1 &
	LABCLOUD_PID=$!
	for _ in $(seq 100); do
		[ -s "$WORK/labcloud.port" ] && break
		sleep 0.05
	done
	[ -s "$WORK/labcloud.port" ] || die "labcloud did not start: $(cat "$WORK/labcloud.log")"
	# shellcheck disable=SC2034 # used by the scripts that source this file
	LABCLOUD_URL="http://127.0.0.1:$(cat "$WORK/labcloud.port")"
}

labcloud_stop() {
	if [ -n "$LABCLOUD_PID" ]; then
		kill "$LABCLOUD_PID" 2> /dev/null || true
		wait "$LABCLOUD_PID" 2> /dev/null || true
		LABCLOUD_PID=
	fi
}

# Field of the apply summary line in a --json output file.
summary_field() {
	jq -r "select(.type == \"summary\") | .$2" "$1" | tail -n 1
}

# Print "name: value" aligned.
fig() {
	printf '  %-44s %s\n' "$1:" "$2"
}
