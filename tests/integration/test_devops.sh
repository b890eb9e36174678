#!/usr/bin/env bash
# The DevOps example end to end: a module repository with tags behind git
# daemon, a plan pinned to "~> 1.0", init, apply, a 1.1.0 release that the
# lock keeps out until `init --upgrade`, then plan --detailed-exitcode = 2.
set -uo pipefail
ROOT=${MO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
export MECORCH=${MECORCH:-$ROOT/build/mecorch}
WORK=$(mktemp -d /tmp/mecorch-test-devops.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
pass=0 fail=0
check() { if eval "$2"; then echo "ok - $1"; pass=$((pass+1)); else echo "FAIL - $1"; fail=$((fail+1)); fi; }

"$ROOT/examples/devops/run.sh" "$WORK/run" >"$WORK/out.log" 2>&1
rc=$?
check "examples/devops/run.sh completes (exit $rc)" '[ $rc = 0 ]'
[ $rc = 0 ] || tail -40 "$WORK/out.log"
check "the lock pinned v1.0.0 first" 'grep -q "refs/tags/v1.0.0" <(sed -n "/== mecorch init$/,/== mecorch apply/p" "$WORK/out.log")'
check "plan with the old lock shows no change" 'grep -q "No changes" <(sed -n "/nothing changes/,/init --upgrade/p" "$WORK/out.log")'
check "init --upgrade moved the lock to v1.1.0" 'grep -q "refs/tags/v1.1.0" "$WORK/run/deploy/mecorch.lock"'
check "~> 1.0 never picked v2.0.0" '! grep -q "v2.0.0" "$WORK/run/deploy/mecorch.lock"'
check "the upgrade shows as 2 updates" 'grep -q "Plan: 0 to add, 2 to change, 0 to replace, 0 to destroy." "$WORK/out.log"'
check "destroy left nothing in the state" '[ -z "$("$MECORCH" state list --state "$WORK/run/mecorch.db")" ]'
echo "$pass passed, $fail failed"
[ $fail = 0 ]
