#!/usr/bin/env bash
# apply-1k.sh - apply throughput and the core's CPU cost per action.
#
# 1. N=1000 independent lab/generic objects against labcloud answering every
#    request after LATENCY=50 ms, at P=100 actions in flight, on an empty
#    state.  The ideal wall time is ceil(N/P) x latency; goal: the apply's
#    own elapsed time (the --json summary's elapsed_ms) <= 1.15 x ideal.
#    Also: the whole process's wall time, and CPU per action (the summary's
#    cpu_us / N, and user+sys of the process / N).
# 2. NULL_N=10000 null resources (no I/O): the CPU the core spends per action.
# Medians of RUNS runs, each on a fresh state and a fresh labcloud.
source "$(dirname "$0")/lib.sh"
need_mecorch

N=${N:-1000}
P=${P:-100}
LATENCY=${LATENCY:-50}
NULL_N=${NULL_N:-10000}
NULL_P=${NULL_P:-32}

# run_apply NAME: runs "${APPLY[@]}" on a fresh state, appends
# "elapsed_ms cpu_us wall_s user_s sys_s maxrss_kb" to $WORK/NAME.
run_apply() {
	local name=$1 state=$WORK/apply.db
	rm -f "$state" "$state-wal" "$state-shm"
	timed "$WORK/out.json" "$WORK/fig" "${APPLY[@]}" --state "$state" ||
		die "apply failed: $(tail -n 3 "$WORK/out.json")"
	[ "$(summary_field "$WORK/out.json" failed)" = 0 ] || die "some actions failed"
	echo "$(summary_field "$WORK/out.json" elapsed_ms) $(summary_field "$WORK/out.json" cpu_us)" \
		"$(cat "$WORK/fig")" >> "$WORK/$name"
}

col() { # col FILE N -> median of column N
	awk -v c="$2" '{ print $c }' "$1" | median
}

# The floor of this machine: the same N POSTs at P in flight from curl
# (a native client), so the figures can be read against what labcloud and
# the machine allow at all.  Median of RUNS runs, in seconds.
client_floor() {
	command -v curl > /dev/null 2>&1 || { echo "n/a"; return; }
	for _ in $(seq "$RUNS"); do
		labcloud_start --latency-ms "$LATENCY"
		for _ in $(seq "$N"); do
			printf 'url = "%s/v1/floor"\noutput = "/dev/null"\n' "$LABCLOUD_URL"
		done > "$WORK/curl.cfg"
		t0=$(now)
		curl -s --no-progress-meter --parallel --parallel-max "$P" \
			-H 'content-type: application/json' -d '{"name":"x"}' -K "$WORK/curl.cfg" 2> /dev/null ||
			die "curl failed"
		t1=$(now)
		labcloud_stop
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
	done | median
}

waves=$(( (N + P - 1) / P )) # ceil(N/P)
ideal_ms=$(( waves * LATENCY ))
echo "== apply of $N lab/generic objects, labcloud latency $LATENCY ms, parallelism $P ($RUNS runs)"
for _ in $(seq "$RUNS"); do
	labcloud_start --latency-ms "$LATENCY"
	APPLY=("$MECORCH" apply "$BENCH_DIR/plans/generic.lua" --var "endpoint=$LABCLOUD_URL"
	       --var "count=$N" --parallelism "$P" --auto-approve --json)
	run_apply generic
	created=$(summary_field "$WORK/out.json" created)
	[ "$created" = "$N" ] || die "created $created objects, not $N"
	labcloud_stop
done
elapsed=$(col "$WORK/generic" 1)
cpu_us=$(col "$WORK/generic" 2)
wall=$(col "$WORK/generic" 3)
pcpu=$(awk '{ print $4 + $5 }' "$WORK/generic" | median)
ratio=$(awk -v e="$elapsed" -v i="$ideal_ms" 'BEGIN { printf "%.3f", e / i }')
floor_s=$(client_floor)
fig "ideal: ceil(N/P) x latency" "$ideal_ms ms"
fig "floor: curl --parallel, same N, P, latency" "$floor_s s (ratio $(awk -v w="$floor_s" -v i="$ideal_ms" 'BEGIN { printf "%.3f", w * 1000 / i }'))"
fig "apply elapsed (summary elapsed_ms, median)" "$elapsed ms"
fig "ratio elapsed / ideal" "$ratio"
fig "goal ratio <= 1.15" "$(awk -v r="$ratio" 'BEGIN { print (r <= 1.15 ? "met" : "MISSED") }')"
fig "whole process wall (median)" "$wall s"
fig "ratio process wall / ideal" "$(awk -v w="$wall" -v i="$ideal_ms" 'BEGIN { printf "%.3f", w * 1000 / i }')"
fig "core CPU per action (cpu_us / N)" "$(awk -v c="$cpu_us" -v n="$N" 'BEGIN { printf "%.0f us", c / n }')"
fig "process CPU per action ((user+sys) / N)" "$(awk -v c="$pcpu" -v n="$N" 'BEGIN { printf "%.0f us", c * 1e6 / n }')"
fig "peak RSS (max)" "$(awk '{ print $6 }' "$WORK/generic" | sort -n | tail -n 1 | awk '{ printf "%.1f MB", $1 / 1024 }')"
fig "all runs: elapsed_ms" "$(awk '{ printf "%s ", $1 }' "$WORK/generic")"

echo "== apply of $NULL_N null resources (no I/O), parallelism $NULL_P ($RUNS runs)"
APPLY=("$MECORCH" apply "$BENCH_DIR/plans/null.lua" --var "count=$NULL_N" --parallelism "$NULL_P"
       --auto-approve --json)
for _ in $(seq "$RUNS"); do
	run_apply null
done
[ "$(summary_field "$WORK/out.json" created)" = "$NULL_N" ] || die "the null apply did not create $NULL_N"
elapsed=$(col "$WORK/null" 1)
cpu_us=$(col "$WORK/null" 2)
wall=$(col "$WORK/null" 3)
pcpu=$(awk '{ print $4 + $5 }' "$WORK/null" | median)
fig "apply elapsed (summary elapsed_ms, median)" "$elapsed ms"
fig "whole process wall (median)" "$wall s"
fig "core CPU per action (cpu_us / N)" "$(awk -v c="$cpu_us" -v n="$NULL_N" 'BEGIN { printf "%.0f us", c / n }')"
fig "process CPU per action ((user+sys) / N)" "$(awk -v c="$pcpu" -v n="$NULL_N" 'BEGIN { printf "%.0f us", c * 1e6 / n }')"
fig "actions per second (N / elapsed)" "$(awk -v e="$elapsed" -v n="$NULL_N" 'BEGIN { printf "%.0f", n * 1000 / e }')"
fig "peak RSS (max)" "$(awk '{ print $6 }' "$WORK/null" | sort -n | tail -n 1 | awk '{ printf "%.1f MB", $1 / 1024 }')"
