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

# The lab cloud the module manages.
"$LABCLOUD" --listen 127.0.0.1:0 --port-file "$WORK/lab.port" >"$WORK/labcloud.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/lab.port" ] && break; sleep 0.05; done
ENDPOINT=http://127.0.0.1:$(cat "$WORK/lab.port")

say "module repository: the in-tree lab/generic module, released as v1.0.0"
rm -rf "$WORK/src" "$WORK/srv"
mkdir -p "$WORK/src/modules" "$WORK/srv"
cp -r "$ROOT/iac-modules/lab/generic" "$WORK/src/modules/generic"
git -C "$WORK/src" init -q -b main
git -C "$WORK/src" add -A
git -C "$WORK/src" commit -qm "generic module 1.0.0"
git -C "$WORK/src" tag -a v1.0.0 -m "release 1.0.0"
# 2.0.0 renames an input: a breaking change that "~> 1.0" must never pick.
sed -i 's/version = "1.0.0"/version = "2.0.0"/' "$WORK/src/modules/generic/module.lua"
git -C "$WORK/src" commit -qam "generic module 2.0.0 (breaking)"
git -C "$WORK/src" tag -a v2.0.0 -m "release 2.0.0"
git -C "$WORK/src" checkout -q v1.0.0 -b release-1.x
git clone -q --bare "$WORK/src" "$WORK/srv/modules.git"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
git daemon --reuseaddr --base-path="$WORK/srv" --export-all --listen=127.0.0.1 --port="$PORT" \
  "$WORK/srv" >"$WORK/daemon.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do git ls-remote "git://127.0.0.1:$PORT/modules.git" >/dev/null 2>&1 && break; sleep 0.05; done
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
