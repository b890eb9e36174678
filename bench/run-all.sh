#!/usr/bin/env bash
# run-all.sh - run every benchmark in turn and print the figures, preceded
# by the machine they ran on.  Benchmarks print figures; they are not tests
# and ctest never runs them.  See bench/lib.sh for the environment.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)

echo "== machine"
echo "  date:    $(date -u)"
echo "  cpu:     $(nproc) x $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "  memory:  $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "  kernel:  $(uname -r)"
echo "  debian:  $(cat /etc/debian_version 2> /dev/null || echo '?')"
echo "  load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min)"

"$dir/plan-10k.sh"
"$dir/apply-1k.sh"
"$dir/terraform.sh"
