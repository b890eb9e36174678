#!/usr/bin/env bash
# podman.sh - a private podman with its Docker-compatible REST API on a unix
# socket, for the edge-cloud lab (iac-modules/edge-cloud/containers).
#
#   podman.sh start DIR    start `podman system service` on DIR/podman.sock
#                          (idempotent: an answering service is left alone);
#                          prints the socket path once _ping answers OK
#   podman.sh stop DIR     stop that service (idempotent; containers keep running
#                          under their conmon, as with a real daemon restart)
#   podman.sh clean DIR    stop the service, force-remove every container, pod and
#                          image of DIR's storage, and its networks state; drop
#                          netavark's leftover NAT chains when no container runs
#   podman.sh status DIR   exit 0 when the service answers _ping
#   podman.sh env DIR      print the CONTAINERS_CONF / CONTAINERS_STORAGE_CONF
#                          exports that point the podman CLI at DIR
#   podman.sh podman DIR ARGS...   run the podman CLI on DIR's storage
#
# Everything lives under DIR: containers.conf (runtime runc and explicit
# nofile/nproc ulimits: crun and podman's default ulimits fail on the lab's
# machines, see the lab notes), storage.conf (graph root DIR/storage, run
# root DIR/run), the network configuration, the service's pid and log.
# No system configuration file is read for these settings or written.
# Needs root, podman, runc (scripts/install-edge-lab).
set -euo pipefail

die() {
	echo "podman.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
}

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd=$1
shift
case $cmd in
-h | --help | help) usage; exit 0 ;;
esac
[ $# -ge 1 ] || die "$cmd: missing DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
shift
SOCK=$DIR/podman.sock
PIDF=$DIR/podman.pid
LOG=$DIR/podman.log

# The private configuration; rewritten on every call so it follows DIR.
write_conf() {
	mkdir -p "$DIR/storage" "$DIR/run" "$DIR/tmp" "$DIR/networks"
	cat >"$DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$DIR/tmp"

[network]
network_config_dir = "$DIR/networks"
EOF
	cat >"$DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
EOF
}

export_env() {
	export CONTAINERS_CONF=$DIR/containers.conf
	export CONTAINERS_STORAGE_CONF=$DIR/storage.conf
}

ping_ok() {
	[ -S "$SOCK" ] &&
		[ "$(curl -s --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" = OK ]
}

service_pid() {
	local pid
	[ -s "$PIDF" ] || return 1
	pid=$(cat "$PIDF")
	# Only our own service: its command line names our socket.
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF "unix://$SOCK" || return 1
	echo "$pid"
}

start() {
	local pid i
	command -v podman >/dev/null || die "podman is not installed (scripts/install-edge-lab)"
	command -v runc >/dev/null || die "runc is not installed (scripts/install-edge-lab)"
	write_conf
	export_env
	if service_pid >/dev/null && ping_ok; then
		echo "$SOCK"
		return 0
	fi
	stop_service
	rm -f "$SOCK"
	# setsid: the service outlives this script and does not get the
	# caller's terminal signals; its pid is recorded for stop.
	setsid podman system service --time=0 "unix://$SOCK" </dev/null >>"$LOG" 2>&1 &
	echo $! >"$PIDF"
	# up to 60 s: the service starts slowly on a loaded machine
	for i in $(seq 1 1200); do
		if ping_ok; then
			echo "$SOCK"
			return 0
		fi
		kill -0 "$(cat "$PIDF")" 2>/dev/null || break
		sleep 0.05
	done
	tail -n 20 "$LOG" >&2 || true
	die "the podman service did not answer on $SOCK"
}

stop_service() {
	local pid i
	if pid=$(service_pid); then
		kill -TERM "$pid" 2>/dev/null || true
		for i in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.05
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$PIDF" "$SOCK"
}

clean() {
	write_conf
	export_env
	stop_service
	podman pod rm -af -t 0 >/dev/null 2>&1 || true
	podman rm -af -t 0 >/dev/null 2>&1 || true
	podman rmi -af >/dev/null 2>&1 || true
	# Unmount what the overlay driver may still hold, so DIR can be removed.
	podman system reset -f >/dev/null 2>&1 || true
	{ grep -F " $DIR/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	drop_netavark_rules
}

# netavark leaves its NAT chains behind after the last container is gone.
# Remove them, but only when no container runs on this host at all (every
# podman container has a conmon), so nobody else's port forwarding breaks.
drop_netavark_rules() {
	local t rule chain
	command -v iptables >/dev/null || return 0
	pgrep -x conmon >/dev/null && return 0
	for t in nat filter; do
		{ iptables -t "$t" -S 2>/dev/null || true; } | { grep -E '^-A [A-Z]+ .*-j NETAVARK' || true; } |
			while read -r rule; do
			# eval: the rule is iptables' own shell-quoted output
			eval "iptables -t $t ${rule/#-A/-D}" 2>/dev/null || true
		done
		for chain in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK/ {print $2}'); do
			iptables -t "$t" -F "$chain" 2>/dev/null || true
		done
		for chain in $(iptables -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^NETAVARK/ {print $2}'); do
			iptables -t "$t" -X "$chain" 2>/dev/null || true
		done
	done
}

case $cmd in
start) start ;;
stop) stop_service ;;
clean) clean ;;
status) ping_ok ;;
env)
	write_conf
	echo "export CONTAINERS_CONF=$DIR/containers.conf"
	echo "export CONTAINERS_STORAGE_CONF=$DIR/storage.conf"
	;;
podman)
	write_conf
	export_env
	exec podman "$@"
	;;
*) usage >&2; exit 2 ;;
esac
