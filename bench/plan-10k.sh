#!/usr/bin/env bash
# plan-10k.sh - `mecorch plan` of 10,000 resources of the null module on an
# empty state: wall time (median of RUNS runs) and peak RSS.
# Goals: <= 1 s and <= 150 MB.  Extra figure: the same plan against a state
# that already holds the 10,000 resources (every one read back by refresh).
# NO_HYPERFINE=1 times with a bash loop instead of hyperfine.
# See bench/lib.sh for the other environment variables.
source "$(dirname "$0")/lib.sh"
need_mecorch

N=${N:-10000}
PLAN=$BENCH_DIR/plans/null.lua
STATE=$WORK/plan.db
CMD=("$MECORCH" plan "$PLAN" --state "$STATE" --var "count=$N" --json)

echo "== plan of $N null resources on an empty state ($RUNS runs)"
if [ -z "${NO_HYPERFINE:-}" ] &&
	{ command -v hyperfine > /dev/null 2>&1 || apt-get install -y hyperfine > /dev/null 2>&1; }; then
	hyperfine --style none --runs "$RUNS" --warmup 1 --prepare "rm -f $STATE $STATE-wal $STATE-shm" \
		--export-json "$WORK/hf.json" "$(printf '%q ' "${CMD[@]}")> /dev/null" > /dev/null
	wall=$(jq -r '.results[0].median' "$WORK/hf.json")
	how="hyperfine median"
else
	for _ in $(seq "$RUNS"); do
		rm -f "$STATE" "$STATE-wal" "$STATE-shm"
		t0=$(now)
		"${CMD[@]}" > /dev/null
		t1=$(now)
		awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
	done > "$WORK/walls"
	wall=$(median < "$WORK/walls")
	how="median of a bash loop"
fi

for _ in $(seq "$RUNS"); do
	rm -f "$STATE" "$STATE-wal" "$STATE-shm"
	timed /dev/null "$WORK/fig" "${CMD[@]}"
	cat "$WORK/fig"
done > "$WORK/figs"
rss_kb=$(awk '{ print $4 }' "$WORK/figs" | sort -n | tail -n 1)
cpu=$(awk '{ print $2 + $3 }' "$WORK/figs" | median)
rss_mb=$(awk -v k="$rss_kb" 'BEGIN { printf "%.1f", k / 1024 }')
grep -q '"add":'"$N" <(jq -c 'select(.type == "plan") | .summary' <("${CMD[@]}")) ||
	die "the plan does not add $N resources"

fig "wall time ($how)" "$(printf '%.3f s' "$wall")"
fig "process CPU (user+sys, median)" "$(printf '%.3f s' "$cpu")"
fig "peak RSS (max of $RUNS)" "$rss_mb MB"
fig "goal wall <= 1 s" "$(awk -v w="$wall" 'BEGIN { print (w <= 1 ? "met" : "MISSED") }')"
fig "goal RSS <= 150 MB" "$(awk -v r="$rss_mb" 'BEGIN { print (r <= 150 ? "met" : "MISSED") }')"

echo "== plan of $N null resources against a state holding them (refresh reads each)"
rm -f "$STATE" "$STATE-wal" "$STATE-shm"
"$MECORCH" apply "$PLAN" --state "$STATE" --var "count=$N" --auto-approve --json > /dev/null
for _ in $(seq "$RUNS"); do
	timed /dev/null "$WORK/fig" "${CMD[@]}"
	cat "$WORK/fig"
done > "$WORK/figs"
for _ in $(seq "$RUNS"); do
	timed /dev/null "$WORK/fig" "${CMD[@]}" --refresh false
	cat "$WORK/fig"
done > "$WORK/figs-norefresh"
fig "wall time, refresh (median)" "$(awk '{ print $1 }' "$WORK/figs" | median) s"
fig "wall time, --refresh false (median)" "$(awk '{ print $1 }' "$WORK/figs-norefresh" | median) s"
fig "peak RSS, refresh (max)" "$(awk '{ print $4 }' "$WORK/figs" | sort -n | tail -n 1 | awk '{ printf "%.1f", $1 / 1024 }') MB"
