# lib_net.sh - ports and listening sockets of test servers, shared by lib.sh
# and lib_gitlab.sh (which the unit tests source on its own).
#
#   it_free_port                  a TCP port nothing uses, below the ephemeral range
#   pid_listens PID PORT          PID or a descendant listens on TCP PORT
#   wait_listen PORT PID [SECS]   until it does; fails early when PID exits

# Is TCP port $1 of this network namespace in use (listening, connected, or
# in TIME_WAIT) on any address?
_it_port_used() {
	awk -v p="$(printf ':%04X' "$1")" 'FNR > 1 && substr($2, length($2) - 4) == p { f = 1 }
		END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# it_free_port: a port for a server that takes its port on the command line.
# Chosen at random below the ephemeral range (ip_local_port_range), where
# neither bind(0) nor outgoing connections take ports, so nothing but a
# request for that very port can take it before the server binds it; and
# unused now.  The callers still check that their own server got it
# (wait_listen) and pick again when it did not.
it_free_port() {
	local lo=32768 base=10000 span p i
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null
	span=$((lo - base))
	if [ "$span" -lt 2000 ]; then # no room below the range: any unprivileged port
		base=1024
		span=$((65536 - base))
	fi
	for i in $(seq 1 500); do
		p=$((base + (RANDOM * 32768 + RANDOM) % span))
		if ! _it_port_used "$p"; then
			echo "$p"
			return 0
		fi
	done
	echo "no free port found" >&2
	return 1
}

# PID and its descendants, one a line.
_it_tree() {
	local c
	echo "$1"
	for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		_it_tree "$c"
	done
}

# pid_listens PID PORT: a TCP socket listening on PORT (any address) is an
# open file of PID or of one of its descendants: the server is up, and the
# port is its own, not another process's that took it first.
pid_listens() {
	local inodes ino p
	inodes=$(awk -v p="$(printf ':%04X' "$2")" 'FNR > 1 && $4 == "0A" &&
		substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
	[ -n "$inodes" ] || return 1
	for p in $(_it_tree "$1"); do
		for ino in $inodes; do
			# not a pipe: under pipefail an early grep -q could fail it
			grep -qF "socket:[$ino]" <(ls -l "/proc/$p/fd" 2>/dev/null) && return 0
		done
	done
	return 1
}

# wait_listen PORT PID [SECS]: until PID listens on PORT (pid_listens);
# fails as soon as PID has exited (say, the port was taken), or after SECS
# (default 120) seconds.
wait_listen() {
	local end=$((SECONDS + ${3:-120}))
	while :; do
		pid_listens "$2" "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.05
	done
}
