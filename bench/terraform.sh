#!/usr/bin/env bash
# terraform.sh - mecorch against Terraform on the same job: apply N=10000
# resources that do nothing, on an empty state, at the same parallelism
# (P=10, Terraform's default).  Terraform uses the built-in terraform_data
# resource (no provider download, no network); mecorch uses the null module
# (bench/modules/null).  Prints wall time, CPU and peak RSS of each whole
# process and the ratios Terraform / mecorch.  Terraform is slow at this
# size (minutes), so it runs TF_RUNS=1 time; mecorch runs RUNS times.
# Skipped when `terraform` is not on PATH.
source "$(dirname "$0")/lib.sh"

if ! command -v terraform > /dev/null 2>&1; then
	echo "== terraform comparison: terraform is not installed (not on PATH): skipped"
	exit 0
fi
need_mecorch

N=${N:-10000}
P=${P:-10}
TF_RUNS=${TF_RUNS:-1}
TF_TIMEOUT=${TF_TIMEOUT:-3600}
export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 TF_INPUT=0
: > "$WORK/terraformrc"
export TF_CLI_CONFIG_FILE=$WORK/terraformrc

echo "== apply of $N no-op resources, parallelism $P: Terraform ($(terraform version | head -n 1)) vs mecorch"
mkdir -p "$WORK/tf"
cat > "$WORK/tf/main.tf" << 'TF'
variable "n" {
  type = number
}

resource "terraform_data" "t" {
  count = var.n
  input = { name = "t${count.index + 1}", index = count.index + 1, payload = "x" }
}
TF
(cd "$WORK/tf" && terraform init -no-color > init.log 2>&1) || die "terraform init failed: $(tail -n 5 "$WORK/tf/init.log")"
for _ in $(seq "$TF_RUNS"); do
	rm -f "$WORK/tf/terraform.tfstate" "$WORK/tf/terraform.tfstate.backup"
	(cd "$WORK/tf" && timed apply.log "$WORK/fig" timeout "$TF_TIMEOUT" \
		terraform apply -auto-approve -no-color -parallelism="$P" -var "n=$N") ||
		die "terraform apply failed: $(tail -n 5 "$WORK/tf/apply.log")"
	grep -q "Resources: $N added" "$WORK/tf/apply.log" || die "terraform did not add $N resources"
	cat "$WORK/fig"
done > "$WORK/tf.figs"

APPLY=("$MECORCH" apply "$BENCH_DIR/plans/null.lua" --var "count=$N" --parallelism "$P"
       --auto-approve --json)
for _ in $(seq "$RUNS"); do
	rm -f "$WORK/m.db" "$WORK/m.db-wal" "$WORK/m.db-shm"
	timed "$WORK/m.json" "$WORK/fig" "${APPLY[@]}" --state "$WORK/m.db" || die "mecorch apply failed"
	[ "$(summary_field "$WORK/m.json" created)" = "$N" ] || die "mecorch did not create $N resources"
	cat "$WORK/fig"
done > "$WORK/m.figs"

tf_wall=$(awk '{ print $1 }' "$WORK/tf.figs" | median)
tf_cpu=$(awk '{ print $2 + $3 }' "$WORK/tf.figs" | median)
tf_rss=$(awk '{ print $4 }' "$WORK/tf.figs" | sort -n | tail -n 1)
m_wall=$(awk '{ print $1 }' "$WORK/m.figs" | median)
m_cpu=$(awk '{ print $2 + $3 }' "$WORK/m.figs" | median)
m_rss=$(awk '{ print $4 }' "$WORK/m.figs" | sort -n | tail -n 1)
fig "terraform wall (median of $TF_RUNS)" "$tf_wall s"
fig "terraform CPU (user+sys)" "$tf_cpu s"
fig "terraform peak RSS" "$(awk -v k="$tf_rss" 'BEGIN { printf "%.1f MB", k / 1024 }')"
fig "mecorch wall (median of $RUNS)" "$m_wall s"
fig "mecorch CPU (user+sys)" "$m_cpu s"
fig "mecorch peak RSS" "$(awk -v k="$m_rss" 'BEGIN { printf "%.1f MB", k / 1024 }')"
fig "ratio wall terraform / mecorch" "$(awk -v a="$tf_wall" -v b="$m_wall" 'BEGIN { printf "%.1f", a / b }')"
fig "ratio CPU terraform / mecorch" "$(awk -v a="$tf_cpu" -v b="$m_cpu" 'BEGIN { printf "%.1f", a / b }')"
