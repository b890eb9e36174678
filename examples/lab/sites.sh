#!/usr/bin/env bash
# sites.sh - a lab of N "sites" on one Linux machine: each site is a network
# namespace running its own sshd, all joined by an underlay L2 segment, for
# the SSH-driven modules (iac-modules/bare-metal/ssh-host,
# iac-modules/interconnect/overlay), their tests and the Ansible benchmark.
#
#   sites.sh up N DIR     create N sites (1..60); DIR holds keys, configs, logs
#   sites.sh down DIR     remove everything `up` made (idempotent; also after a
#                         failed or partial `up`)
#   sites.sh env DIR      print DIR/sites.env
#
# Topology (PFX = "mo<pid of up>", so parallel labs never share a name):
#
#   root ns: PFXm 10.250.X.1/24 --veth-- [ns PFXu: bridge br0] --veth-- ns PFXs1: eth0 10.250.X.11
#                                                             \--veth-- ns PFXs2: eth0 10.250.X.12 ...
#
# The underlay is 10.250.X.0/24, X (1..127) being the first slot no other lab
# holds (taken under a lock; a slot is held while its route exists in the
# root namespace).  The root namespace sits on the underlay as a management
# station (10.250.X.1), so mecorch, ssh and Ansible reach every site's sshd
# at 10.250.X.(10+i):22.  Nothing else is added to the root namespace.
# Overlays built by the tests live inside the site namespaces only; by
# convention they use 10.250.128.0/17, which no underlay uses.
#
# Every site shares the machine's filesystem and users, so each gets a
# private writable directory (SITEi_ROOT) for the files and pidfiles the
# tests manage.  One test user (login name PFX, shell /bin/sh, password
# disabled but not locked, home DIR/home) logs in with DIR/id_ed25519; when
# sudo is installed it may run anything as root without a password
# (/etc/sudoers.d/PFX), as a deploy user does on real hosts.
#
# Output: DIR/sites.env (shell variables, below) and DIR/sites.json (the same
# as JSON), DIR/known_hosts (every site's host key).
#   LAB_DIR LAB_PREFIX LAB_SLOT LAB_N LAB_USER LAB_KEY LAB_KNOWN_HOSTS LAB_SUDO
#   LAB_UNDERLAY_NS LAB_MGMT_ADDR
#   SITEi_NS SITEi_ADDR SITEi_PORT SITEi_FP SITEi_DEV SITEi_ROOT (i = 1..N)
#
# Needs root, iproute2, openssh-server (scripts/install-ssh-lab).
set -euo pipefail

SSHD=/usr/sbin/sshd
UP_OK=0
UP_DIR=
LOCK=/run/lock/mecorch-sites.lock

die() {
	echo "sites.sh: $*" >&2
	exit 1
}

usage() {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "run as root (network namespaces, users, sshd)"
	command -v ip >/dev/null || die "iproute2 is missing (scripts/install-ssh-lab)"
	[ -x "$SSHD" ] || die "$SSHD is missing (scripts/install-ssh-lab)"
}

# Wait (bounded: 60 s, sshd starts slowly on a loaded machine) until
# ADDR:PORT accepts TCP connections.
wait_port() {
	local addr=$1 port=$2 end=$((SECONDS + 60))
	while :; do
		if timeout 1 bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null; then
			return 0
		fi
		[ "$SECONDS" -ge "$end" ] && return 1
		sleep 0.05
	done
}

# ---- down --------------------------------------------------------------------

# Kill every process whose network namespace is NS (sshd, the sessions it
# runs, services started over SSH), TERM first, then KILL.
kill_ns() {
	local ns=$1 pids i
	pids=$(ip netns pids "$ns" 2>/dev/null || true)
	[ -n "$pids" ] || return 0
	kill -TERM $pids 2>/dev/null || true
	for i in $(seq 1 20); do
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] || return 0
		sleep 0.05
	done
	kill -KILL $pids 2>/dev/null || true
	sleep 0.1
}

cmd_down() {
	local dir=$1 pfx ns link
	[ -f "$dir/lab.state" ] || {
		echo "sites.sh: nothing to tear down in $dir"
		return 0
	}
	pfx=$(sed -n 's/^PFX=//p' "$dir/lab.state")
	[ -n "$pfx" ] || die "$dir/lab.state names no prefix"
	# sites first (sshd, sessions, services), then the underlay
	for ns in $(ip netns list | awk '{print $1}' | grep -E "^${pfx}(s[0-9]+|u)\$" || true); do
		kill_ns "$ns"
		ip netns del "$ns" 2>/dev/null || true
	done
	for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' |
		grep -E "^${pfx}(m|v[0-9]+|p[0-9]+)\$" || true); do
		ip link del "$link" 2>/dev/null || true
	done
	rm -f "/etc/sudoers.d/$pfx"
	if id -u "$pfx" >/dev/null 2>&1; then
		userdel "$pfx" 2>/dev/null || {
			sleep 0.5
			userdel "$pfx" || echo "sites.sh: could not remove user $pfx" >&2
		}
	fi
	rm -f "$dir/lab.state" "$dir/sites.env" "$dir/sites.json"
	echo "sites.sh: lab $pfx removed"
}

# ---- up ----------------------------------------------------------------------

# Claim a free underlay slot X and create the management veth holding
# 10.250.X.1 in the root namespace, under a lock shared by all labs.
claim_slot() {
	local pfx=$1 x
	mkdir -p "$(dirname "$LOCK")"
	exec 9>"$LOCK"
	flock -w 30 9 || die "cannot take $LOCK"
	for x in $(seq 1 127); do
		if [ -z "$(ip -4 route show root "10.250.$x.0/24" 2>/dev/null)" ] &&
			! ip -4 -o addr show | grep -q " 10\.250\.$x\."; then
			ip link add "${pfx}m" type veth peer name "${pfx}p0"
			ip addr add "10.250.$x.1/24" dev "${pfx}m"
			ip link set "${pfx}m" up
			exec 9>&-
			SLOT=$x
			return 0
		fi
	done
	exec 9>&-
	die "no free 10.250.X.0/24 slot (1..127): stale labs? see 'ip route | grep 10.250'"
}

cmd_up() {
	local n=$1 dir=$2 pfx i ns addr fp sudo=0
	case $n in
	'' | *[!0-9]*) die "N must be a number" ;;
	esac
	[ "$n" -ge 1 ] && [ "$n" -le 60 ] || die "N must be 1 to 60"
	need_root
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	[ ! -f "$dir/lab.state" ] || die "$dir already holds a lab; run: sites.sh down $dir"
	pfx=mo$$
	[ ${#pfx} -le 10 ] || die "prefix $pfx too long for interface names"
	if ip netns list | awk '{print $1}' | grep -qE "^${pfx}(s[0-9]+|u)\$" || id -u "$pfx" >/dev/null 2>&1; then
		die "a stale lab named $pfx exists; remove it with: sites.sh down <its DIR>"
	fi
	# record first, so that `down` can undo a partial `up`
	printf 'PFX=%s\nN=%s\n' "$pfx" "$n" >"$dir/lab.state"
	UP_DIR=$dir
	trap 'if [ "$UP_OK" != 1 ]; then echo "sites.sh: up failed; cleaning up" >&2; cmd_down "$UP_DIR" >/dev/null 2>&1 || true; fi' EXIT

	chmod 755 "$dir"
	mkdir -p /run/sshd && chmod 755 /run/sshd
	rm -f "$dir/id_ed25519" "$dir/id_ed25519.pub"
	ssh-keygen -q -t ed25519 -N '' -C "mecorch-lab-$pfx" -f "$dir/id_ed25519"
	cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
	chmod 644 "$dir/authorized_keys"

	# the test user
	mkdir -p "$dir/home"
	useradd -M -d "$dir/home" -s /bin/sh "$pfx"
	usermod -p '*' "$pfx" # no password, but not locked: sshd (UsePAM no) refuses locked accounts
	chown "$pfx" "$dir/home"
	chmod 755 "$dir/home"
	if command -v sudo >/dev/null && command -v visudo >/dev/null; then
		printf '%s ALL=(ALL) NOPASSWD: ALL\nDefaults:%s !requiretty\n' "$pfx" "$pfx" >"$dir/sudoers"
		if visudo -cqf "$dir/sudoers"; then
			install -m 0440 "$dir/sudoers" "/etc/sudoers.d/$pfx"
			sudo=1
		fi
	fi

	# the underlay: a bridge in its own namespace, the root namespace on it
	claim_slot "$pfx"
	ip netns add "${pfx}u"
	ip -n "${pfx}u" link set lo up
	ip -n "${pfx}u" link add br0 type bridge
	ip -n "${pfx}u" link set br0 up
	ip link set "${pfx}p0" netns "${pfx}u"
	ip -n "${pfx}u" link set "${pfx}p0" name mgmt
	ip -n "${pfx}u" link set mgmt master br0 up

	: >"$dir/known_hosts"
	for i in $(seq 1 "$n"); do
		ns=${pfx}s$i
		addr=10.250.$SLOT.$((10 + i))
		mkdir -p "$dir/s$i/root"
		chown "$pfx" "$dir/s$i/root"
		chmod 755 "$dir/s$i" "$dir/s$i/root"
		ip netns add "$ns"
		ip -n "$ns" link set lo up
		ip link add "${pfx}v$i" type veth peer name "${pfx}p$i"
		ip link set "${pfx}v$i" netns "$ns"
		ip -n "$ns" link set "${pfx}v$i" name eth0
		ip -n "$ns" addr add "$addr/24" dev eth0
		ip -n "$ns" link set eth0 up
		ip link set "${pfx}p$i" netns "${pfx}u"
		ip -n "${pfx}u" link set "${pfx}p$i" master br0 up

		rm -f "$dir/s$i/host_ed25519" "$dir/s$i/host_ed25519.pub"
		ssh-keygen -q -t ed25519 -N '' -C "site$i" -f "$dir/s$i/host_ed25519"
		cat >"$dir/s$i/sshd_config" <<-EOF
			Port 22
			ListenAddress $addr
			HostKey $dir/s$i/host_ed25519
			PidFile $dir/s$i/sshd.pid
			AuthorizedKeysFile $dir/authorized_keys
			PubkeyAuthentication yes
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			PermitRootLogin no
			AllowUsers $pfx
			UsePAM no
			StrictModes no
			MaxStartups 200
			MaxSessions 200
			Subsystem sftp internal-sftp
			LogLevel VERBOSE
		EOF
		"$SSHD" -t -f "$dir/s$i/sshd_config"
		# sshd -D stays a child of `ip netns exec` (which execs it); setsid
		# detaches it from this script's session
		setsid ip netns exec "$ns" "$SSHD" -D -f "$dir/s$i/sshd_config" -E "$dir/s$i/sshd.log" \
			</dev/null >/dev/null 2>&1 &
		fp=$(ssh-keygen -l -E sha256 -f "$dir/s$i/host_ed25519.pub" | awk '{print $2}')
		echo "$addr $(cut -d' ' -f1,2 "$dir/s$i/host_ed25519.pub")" >>"$dir/known_hosts"
		eval "SITE_ADDR_$i=\$addr SITE_FP_$i=\$fp"
	done
	for i in $(seq 1 "$n"); do
		eval "addr=\$SITE_ADDR_$i"
		wait_port "$addr" 22 || die "sshd of site $i ($addr:22) did not come up; see $dir/s$i/sshd.log"
	done

	{
		echo "LAB_DIR=$dir"
		echo "LAB_PREFIX=$pfx"
		echo "LAB_SLOT=$SLOT"
		echo "LAB_N=$n"
		echo "LAB_USER=$pfx"
		echo "LAB_KEY=$dir/id_ed25519"
		echo "LAB_KNOWN_HOSTS=$dir/known_hosts"
		echo "LAB_SUDO=$sudo"
		echo "LAB_UNDERLAY_NS=${pfx}u"
		echo "LAB_MGMT_ADDR=10.250.$SLOT.1"
		for i in $(seq 1 "$n"); do
			eval "addr=\$SITE_ADDR_$i fp=\$SITE_FP_$i"
			echo "SITE${i}_NS=${pfx}s$i"
			echo "SITE${i}_ADDR=$addr"
			echo "SITE${i}_PORT=22"
			echo "SITE${i}_FP=$fp"
			echo "SITE${i}_DEV=eth0"
			echo "SITE${i}_ROOT=$dir/s$i/root"
		done
	} >"$dir/sites.env"
	{
		printf '{"dir":"%s","prefix":"%s","user":"%s","key_file":"%s","known_hosts":"%s","sudo":%s,"sites":[' \
			"$dir" "$pfx" "$pfx" "$dir/id_ed25519" "$dir/known_hosts" "$([ $sudo = 1 ] && echo true || echo false)"
		for i in $(seq 1 "$n"); do
			eval "addr=\$SITE_ADDR_$i fp=\$SITE_FP_$i"
			[ "$i" -gt 1 ] && printf ','
			printf '{"name":"s%d","ns":"%s","host":"%s","port":22,"host_key_sha256":"%s","dev":"eth0","root":"%s"}' \
				"$i" "${pfx}s$i" "$addr" "$fp" "$dir/s$i/root"
		done
		printf ']}\n'
	} >"$dir/sites.json"
	UP_OK=1
	echo "sites.sh: $n site(s) up as $pfx on 10.250.$SLOT.0/24 (env: $dir/sites.env)"
}

case ${1:-} in
up)
	[ $# -eq 3 ] || usage
	cmd_up "$2" "$3"
	;;
down)
	[ $# -eq 2 ] || usage
	need_root
	cmd_down "$2"
	;;
env)
	[ $# -eq 2 ] || usage
	cat "$2/sites.env"
	;;
*)
	usage
	;;
esac
