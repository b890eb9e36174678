#!/usr/bin/env bash
# The DevOps flow with modules versioned in git, end to end on this machine:
#
#   1. a module repository with a tagged release v1.0.0 (and a v2.0.0 with a
#      breaking change), served by `git daemon` on loopback;
#   2. a plan pinned to "~> 1.0"; `mecorch init` resolves it to v1.0.0 and
#      writes mecorch.lock; apply;
#   3. the module team releases v1.1.0; `mecorch plan` still uses the lock
#      (no change: plans never move by themselves);
#   4. `mecorch init --upgrade` moves the lock to v1.1.0 (not v2.0.0);
#      `mecorch plan --detailed-exitcode` exits 2 and shows the change: what
#      a CI pipeline runs to gate a merge;
#   5. apply, then destroy.
#
# Usage: examples/devops/run.sh [WORKDIR]   (needs build/mecorch, build/labcloud)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MECORCH=${MECORCH:-$ROOT/build/mecorch}
LABCLOUD=${LABCLOUD:-$(dirname "$MECORCH")/labcloud}
WORK=${1:-$(mktemp -d /tmp/mecorch-devops.XXXXXX)}
mkdir -p "$WORK"
export MECORCH_STATE=$WORK/mecorch.db XDG_CACHE_HOME=$WORK/cache
export GIT_AUTHOR_NAME=devops GIT_AUTHOR_EMAIL=devops@example.org
export GIT_COMMITTER_NAME=devops GIT_COMMITTER_EMAIL=devops@example.org
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
die() {
  echo "run.sh: $*" >&2
  exit 1
}

# wait_for SECS COMMAND...: run COMMAND every 50 ms until it succeeds (0), or
# fail (1) after SECS seconds.  Generous deadlines: a loaded machine is slow.
wait_for() {
  local end=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.05
  done
}

# free_port: a TCP port of 127.0.0.1 nobody uses now, chosen at random below
# the kernel's ephemeral range (where outgoing connections and bind(0) take
# their ports), so only a server asking for that very port can race us to it.
port_used() {
  awk -v p="$(printf ':%04X' "$1")" 'FNR > 1 && substr($2, length($2) - 4) == p { f = 1 }
    END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
free_port() {
  local lo=32768 p
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  [ "$lo" -gt 12000 ] || lo=65536 # no room below the range: any unprivileged port
  for _ in $(seq 500); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
    port_used "$p" || { echo "$p"; return 0; }
  done
  die "no free TCP port found"
}

# owns_port PID PORT: PID has a socket listening on TCP PORT open, so the
# server is up and the port is its own, not another process's.
owns_port() {
  local ino
  for ino in $(awk -v p="$(printf ':%04X' "$2")" 'FNR > 1 && $4 == "0A" &&
    substr($2, length($2) - 4) == p { print $10 }' /proc/net/tcp /proc/net/tcp6 2>/dev/null); do
    # not a pipe: under pipefail an early grep -q exit could fail it
    grep -qF "socket:[$ino]" <(ls -l "/proc/$1/fd" 2>/dev/null) && return 0
  done
  return 1
}

# up_or_gone PID PORT: PID owns PORT, or PID has exited.
up_or_gone() {
  ! kill -0 "$1" 2>/dev/null || owns_port "$1" "$2"
}

# The lab cloud the module manages: it binds port 0 itself and writes the
# port it got.
rm -f "$WORK/lab.port"
"$LABCLOUD" --listen 127.0.0.1:0 --port-file "$WORK/lab.port" >"$WORK/labcloud.log" 2>&1 &
lab_pid=$!
pids+=("$lab_pid")
port_file_or_gone() { [ -s "$WORK/lab.port" ] || ! kill -0 "$lab_pid" 2>/dev/null; }
wait_for 60 port_file_or_gone || true
[ -s "$WORK/lab.port" ] ||
  die "labcloud ($LABCLOUD) wrote no port file within 60 s or exited; its log ($WORK/labcloud.log):
$(tail -n 20 "$WORK/labcloud.log")"
ENDPOINT=http://127.0.0.1:$(cat "$WORK/lab.port")

say "module repository: the in-tree lab/generic module, released as v1.0.0"
rm -rf "$WORK/src" "$WORK/srv"
mkdir -p "$WORK/src/modules" "$WORK/srv"
cp -r "$ROOT/iac-modules/lab/generic" "$WORK/src/modules/generic"
git -C "$WORK/src" init -q -b main
git -C "$WORK/src" add -A
git -C "$WORK/src" commit -qm "generic module 1.0.0"
git -C "$WORK/src" tag -a v1.0.0 -m "release 1.0.0"
# 2.0.0 stands for a breaking release (a new major version): "~> 1.0" must
# never pick it.
sed -i 's/version = "1.0.0"/version = "2.0.0"/' "$WORK/src/modules/generic/module.lua"
git -C "$WORK/src" commit -qam "generic module 2.0.0 (breaking)"
git -C "$WORK/src" tag -a v2.0.0 -m "release 2.0.0"
git -C "$WORK/src" checkout -q v1.0.0 -b release-1.x
git clone -q --bare "$WORK/src" "$WORK/srv/modules.git"
# git daemon takes its port on the command line: pick one, and pick again
# when the daemon exits (the port was taken meanwhile) or comes up without
# owning it.  git-daemon is run directly, so $! is the listening process.
GIT_DAEMON=$(git --exec-path)/git-daemon
PORT=
for attempt in 1 2 3 4 5; do
  port=$(free_port)
  "$GIT_DAEMON" --reuseaddr --base-path="$WORK/srv" --export-all --listen=127.0.0.1 \
    --port="$port" "$WORK/srv" >>"$WORK/daemon.log" 2>&1 &
  dpid=$!
  pids+=("$dpid")
  # up, or gone (60 s: a loaded machine starts processes slowly)
  wait_for 60 up_or_gone "$dpid" "$port" || true
  if owns_port "$dpid" "$port"; then
    PORT=$port
    break
  fi
  echo "git daemon did not come up on port $port (attempt $attempt); trying another port" >&2
  kill "$dpid" 2>/dev/null || true
done
[ -n "$PORT" ] || die "git daemon did not start; its log ($WORK/daemon.log):
$(tail -n 20 "$WORK/daemon.log")"
wait_for 60 git ls-remote "git://127.0.0.1:$PORT/modules.git" >/dev/null 2>&1 ||
  die "git daemon on port $PORT does not answer git ls-remote within 60 s; its log:
$(tail -n 20 "$WORK/daemon.log")"
echo "served at git://127.0.0.1:$PORT/modules.git with tags: $(git -C "$WORK/src" tag | tr '\n' ' ')"

say "the plan, pinned to ~> 1.0"
mkdir -p "$WORK/deploy"
cat >"$WORK/deploy/plan.lua" <<PLAN
local endpoint = variable("endpoint", { type = "string" })
local web = module("web", {
  source = "git://127.0.0.1:$PORT/modules.git//modules/generic",
  version = "~> 1.0",
  inputs = { endpoint = endpoint, collection = "web",
             objects = { frontend = { replicas = 2 }, backend = { replicas = 3 } } },
})
output("ids", web.ids)
PLAN
cat "$WORK/deploy/plan.lua"
cd "$WORK/deploy"

say "mecorch init"
"$MECORCH" init
echo "--- mecorch.lock"; cat mecorch.lock

say "mecorch apply"
"$MECORCH" apply --var endpoint="$ENDPOINT" --auto-approve

say "release 1.1.0: every object is labelled with the module release that manages it"
cd "$WORK/src"
python3 - modules/generic/module.lua <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
s = s.replace('version = "1.0.0"', 'version = "1.1.0"', 1)
s = s.replace("        fields = fields,\n", "        fields = labelled(fields),\n", 1)
s = s.replace("\nreturn {\n", "\nlocal function labelled(fields)\n"
              "  local out = { managed_by = \"generic-1.1\" }\n"
              "  for k, v in pairs(fields) do out[k] = v end\n"
              "  return out\nend\n\nreturn {\n", 1)
assert "labelled(fields)," in s and "local function labelled" in s
open(p, "w").write(s)
PY
git diff --stat
git commit -qam "generic module 1.1.0: objects are labelled with the release"
git tag -a v1.1.0 -m "release 1.1.0"
git push -q "$WORK/srv/modules.git" release-1.x v1.1.0
cd "$WORK/deploy"

say "mecorch plan (the lock still pins v1.0.0: nothing changes)"
set +e
"$MECORCH" plan --var endpoint="$ENDPOINT" --detailed-exitcode
rc=$?
set -e
echo "exit status $rc"; [ "$rc" = 0 ]

say "mecorch init --upgrade (~> 1.0 now resolves to v1.1.0, never v2.0.0)"
"$MECORCH" init --upgrade
grep -E '"(ref|resolved_ref|commit)"' mecorch.lock || cat mecorch.lock

say "CI gate: mecorch plan --detailed-exitcode (2 = changes pending)"
set +e
"$MECORCH" plan --var endpoint="$ENDPOINT" --detailed-exitcode
rc=$?
set -e
echo "exit status $rc"; [ "$rc" = 2 ]

say "mecorch apply, then destroy"
"$MECORCH" apply --var endpoint="$ENDPOINT" --auto-approve
"$MECORCH" destroy --var endpoint="$ENDPOINT" --auto-approve
echo; echo "DevOps flow complete in $WORK"
