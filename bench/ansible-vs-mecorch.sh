#!/usr/bin/env bash
# ansible-vs-mecorch.sh - provision the same file and service on N=20 sites
# over SSH with mecorch (iac-modules/bare-metal/ssh-host) and with Ansible
# (Debian's `ansible` package, installed here if missing), and print the
# wall and CPU times and the ratios Ansible / mecorch.
#
# The sites are network namespaces with their own sshd (examples/lab/sites.sh,
# needs root).  On every site each tool writes one file (mode 0644) and starts
# one service supervised through a pidfile (`sleep` under nohup + setsid,
# left alone when its pid is alive), each tool in its own directory.  Both
# log in as the same user with the same key and check host keys (mecorch: the
# pinned SHA256 fingerprints; Ansible: the lab's known_hosts, strict).
#   mecorch: MECORCH_SSH_THREADS=N (one SSH worker per site, as forks=N).
#   Ansible: forks=N, gather_facts off, the default SSH connection with
#            ControlPersist; once with its defaults, once with pipelining.
# Each measurement is a first run on untouched targets and a second run
# that finds nothing to change; RUNS rounds (bench/lib.sh: default 5),
# medians reported.  Takes about a minute per round at N=20.
#
#   sudo bench/ansible-vs-mecorch.sh          (N=20 by default)
source "$(dirname "$0")/lib.sh"

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, a test user, sshd)"
need_mecorch
need ansible-playbook ansible
N=${N:-20}
SITES=$ROOT/examples/lab/sites.sh
MODULE=$ROOT/iac-modules/bare-metal/ssh-host
LABDIR=$(mktemp -d /tmp/mecorch-bench-sites.XXXXXX)
chmod 755 "$LABDIR"

stop_masters() {
	local s
	for s in "$WORK"/cp/*; do
		[ -S "$s" ] && ssh -o ControlPath="$s" -O exit placeholder > /dev/null 2>&1
	done
	return 0
}
cleanup() {
	stop_masters
	"$SITES" down "$LABDIR" > /dev/null 2>&1 || true
	rm -rf "$LABDIR"
	bench_cleanup
}
trap cleanup EXIT

echo "== SSH provisioning of $N sites: a file and a service on each, mecorch vs Ansible"
"$SITES" up "$N" "$LABDIR" > "$WORK/sites.log" 2>&1 || die "sites.sh up failed: $(cat "$WORK/sites.log")"
# shellcheck disable=SC1091
. "$LABDIR/sites.env"

# ---- mecorch: one ssh-host instance per site ------------------------------------

cat > "$WORK/plan.lua" << EOF
local sites = variable("sites", { type = "list" })
local user = variable("user", { type = "string" })
local key_file = variable("key_file", { type = "string" })
local dir = variable("dir", { type = "string" })
for i, s in ipairs(sites) do
  module("site" .. i, {
    source = "$MODULE",
    inputs = {
      host = s.host, user = user, key_file = key_file, host_key_sha256 = s.fp,
      files = { motd = { path = s.root .. "/" .. dir .. "/motd", content = "provisioned by mecorch\n",
                         mode = "0644" } },
      services = { beacon = { command = "sleep 100000", pidfile = s.root .. "/" .. dir .. "/beacon.pid",
                              log = s.root .. "/" .. dir .. "/beacon.log" } },
    },
  })
end
EOF
# site I's variable NAME from sites.env (SITE<I>_<NAME>)
site() {
	local v="SITE${1}_$2"
	echo "${!v}"
}

{
	printf '{"user":"%s","key_file":"%s","sites":[' "$LAB_USER" "$LAB_KEY"
	for i in $(seq 1 "$N"); do
		[ "$i" -gt 1 ] && printf ','
		printf '{"host":"%s","fp":"%s","root":"%s"}' "$(site "$i" ADDR)" "$(site "$i" FP)" "$(site "$i" ROOT)"
	done
	printf ']}\n'
} > "$WORK/vars.json"

# ---- Ansible: the same two things -----------------------------------------------

mkdir -p "$WORK/cp"
{
	echo "[sites]"
	for i in $(seq 1 "$N"); do
		echo "s$i ansible_host=$(site "$i" ADDR) site_root=$(site "$i" ROOT)"
	done
	echo
	echo "[sites:vars]"
	echo "ansible_user=$LAB_USER"
	echo "ansible_ssh_private_key_file=$LAB_KEY"
	echo "ansible_python_interpreter=/usr/bin/python3"
} > "$WORK/inventory.ini"
cat > "$WORK/ansible.cfg" << EOF
[defaults]
inventory = $WORK/inventory.ini
forks = $N
host_key_checking = True
retry_files_enabled = False
interpreter_python = /usr/bin/python3
[ssh_connection]
ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$LAB_KNOWN_HOSTS -o StrictHostKeyChecking=yes
control_path_dir = $WORK/cp
EOF
cat > "$WORK/playbook.yml" << 'EOF'
- hosts: sites
  gather_facts: false
  tasks:
    - name: file
      copy:
        dest: "{{ site_root }}/{{ dir }}/motd"
        content: "provisioned by ansible\n"
        mode: "0644"
    - name: service
      shell: |
        p="{{ site_root }}/{{ dir }}/beacon.pid"
        if [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then echo running; exit 0; fi
        cd / && nohup setsid sh -c 'sleep 100000' >>"{{ site_root }}/{{ dir }}/beacon.log" 2>&1 </dev/null &
        echo $! > "$p"; echo started
      register: r
      changed_when: "'started' in r.stdout"
EOF
export ANSIBLE_CONFIG=$WORK/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=0
export ANSIBLE_LOCAL_TEMP=$WORK/ansible-tmp ANSIBLE_HOME=$WORK/ansible-home

# ---- measuring ------------------------------------------------------------------

# mkdirs DIR: the tool's directory on every site, owned by the login user.
mkdirs() {
	for i in $(seq 1 "$N"); do
		install -d -o "$LAB_USER" "$(site "$i" ROOT)/$1"
	done
}

# verify DIR WORD: every site has DIR/motd containing WORD and a live beacon.
verify() {
	local i root pid
	for i in $(seq 1 "$N"); do
		root=$(site "$i" ROOT)/$1
		grep -q "$2" "$root/motd" 2> /dev/null || die "site $i: $root/motd missing or wrong"
		pid=$(cat "$root/beacon.pid" 2> /dev/null) || die "site $i: no pidfile in $root"
		kill -0 "$pid" 2> /dev/null || die "site $i: beacon $pid is not running"
	done
}

# figures FILE: "wall cpu" seconds from a /usr/bin/time -f '%e %U %S' file.
figures() {
	awk 'NF == 3 { printf "%.3f %.3f\n", $1, $2 + $3 }' "$1" | tail -n 1
}

run_mecorch() { # DIR STATE -> "wall cpu"
	MECORCH_SSH_THREADS=$N /usr/bin/time -f '%e %U %S' -o "$WORK/time" \
		"$MECORCH" apply "$WORK/plan.lua" --var-file "$WORK/vars.json" --var dir="$1" \
		--state "$2" --auto-approve < /dev/null > "$WORK/mecorch.out" 2>&1 ||
		die "mecorch apply failed: $(tail -n 20 "$WORK/mecorch.out")"
	figures "$WORK/time"
}

run_ansible() { # DIR PIPELINING -> "wall cpu"
	ANSIBLE_PIPELINING=$2 /usr/bin/time -f '%e %U %S' -o "$WORK/time" \
		ansible-playbook "$WORK/playbook.yml" -e dir="$1" \
		< /dev/null > "$WORK/ansible.out" 2>&1 ||
		die "ansible-playbook failed: $(tail -n 30 "$WORK/ansible.out")"
	stop_masters # a second run starts without warm connections, as mecorch's does
	figures "$WORK/time"
}

: > "$WORK/m1"; : > "$WORK/m2"; : > "$WORK/a1"; : > "$WORK/a2"; : > "$WORK/p1"; : > "$WORK/p2"
for r in $(seq 1 "$RUNS"); do
	mkdirs "mecorch$r"
	run_mecorch "mecorch$r" "$WORK/state$r.db" >> "$WORK/m1"
	verify "mecorch$r" "provisioned by mecorch"
	run_mecorch "mecorch$r" "$WORK/state$r.db" >> "$WORK/m2"
	grep -q "No changes" "$WORK/mecorch.out" || die "mecorch's second apply changed something"

	mkdirs "ansible$r"
	run_ansible "ansible$r" False >> "$WORK/a1"
	verify "ansible$r" "provisioned by ansible"
	run_ansible "ansible$r" False >> "$WORK/a2"
	grep -q "changed=0" "$WORK/ansible.out" || die "Ansible's second run changed something"

	mkdirs "ansiblep$r"
	run_ansible "ansiblep$r" True >> "$WORK/p1"
	verify "ansiblep$r" "provisioned by ansible"
	run_ansible "ansiblep$r" True >> "$WORK/p2"
	echo "  round $r (wall s / CPU s): mecorch $(tail -n 1 "$WORK/m1" | tr " " /) then $(tail -n 1 "$WORK/m2" | tr " " /);" \
		"Ansible $(tail -n 1 "$WORK/a1" | tr " " /) then $(tail -n 1 "$WORK/a2" | tr " " /);" \
		"Ansible + pipelining $(tail -n 1 "$WORK/p1" | tr " " /) then $(tail -n 1 "$WORK/p2" | tr " " /)"
done

# col N FILE: median of column N
col() { awk -v c="$1" '{ print $c }' "$2" | median; }
m1=$(col 1 "$WORK/m1") m1c=$(col 2 "$WORK/m1") m2=$(col 1 "$WORK/m2") m2c=$(col 2 "$WORK/m2")
a1=$(col 1 "$WORK/a1") a1c=$(col 2 "$WORK/a1") a2=$(col 1 "$WORK/a2") a2c=$(col 2 "$WORK/a2")
p1=$(col 1 "$WORK/p1") p1c=$(col 2 "$WORK/p1") p2=$(col 1 "$WORK/p2") p2c=$(col 2 "$WORK/p2")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx\n", a / b; else print "-" }'; }
line() { # LABEL WALL CPU [MECORCH_WALL MECORCH_CPU]
	if [ $# -gt 3 ]; then
		fig "$1" "$2 s wall, $3 s CPU (Ansible / mecorch: $(ratio "$2" "$4") wall, $(ratio "$3" "$5") CPU)"
	else
		fig "$1" "$2 s wall, $3 s CPU"
	fi
}

echo "  machine: $(nproc) x $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%Y-%m-%d)"
echo "  versions: $("$MECORCH" version 2> /dev/null | sed -n 1p), $(ansible --version 2> /dev/null | sed -n 1p), $(ssh -V 2>&1)"
echo "  load: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"
echo "  $N sites, a file + a service each; medians of $RUNS rounds; CPU = user + system time of the"
echo "  tool and the children it waits for (Ansible's workers and ssh clients), not of the sites"
line "mecorch, first run" "$m1" "$m1c"
line "mecorch, second run (nothing to change)" "$m2" "$m2c"
line "Ansible, first run" "$a1" "$a1c" "$m1" "$m1c"
line "Ansible, second run" "$a2" "$a2c" "$m2" "$m2c"
line "Ansible + pipelining, first run" "$p1" "$p1c" "$m1" "$m1c"
line "Ansible + pipelining, second run" "$p2" "$p2c" "$m2" "$m2c"
