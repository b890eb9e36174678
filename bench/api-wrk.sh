#!/usr/bin/env bash
# api-wrk.sh - throughput and latency of `mecorch serve` on its hottest read:
# GET /app_lcm/v1/app_instances, with wrk (Debian package; see
# scripts/install-api-test).  Starts a server on 127.0.0.1 with its own data
# directory, onboards the example package, creates INSTANCES instances (not
# instantiated: the read path is what is measured), then runs wrk with
# keep-alive connections and prints req/s and the latency percentiles.
#
#   bench/api-wrk.sh [DURATION_S] [CONNECTIONS] [WRK_THREADS] [INSTANCES]
#   (defaults 10 64 2 10; MECORCH=path/to/mecorch, HTTP_THREADS=4)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MECORCH=${MECORCH:-$ROOT/build/mecorch}
DUR=${1:-10}
CONN=${2:-64}
THREADS=${3:-2}
NINST=${4:-10}
command -v wrk >/dev/null || { echo "wrk is missing: run scripts/install-api-test" >&2; exit 1; }
W=$(mktemp -d /tmp/mecorch-api-wrk.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$W"; }
trap cleanup EXIT
TOKEN=bench-token-0001
cat >"$W/config.json" <<JSON
{ "listen": "127.0.0.1:0", "dataDir": "$W/data", "httpThreads": ${HTTP_THREADS:-4},
  "system": { "systemName": "bench", "systemProvider": "lab.example" },
  "zones": [ { "id": "zone-1", "geolocation": { "latitude": 48.85, "longitude": 2.35 },
               "domains": { "edge": { "endpoint": "http://127.0.0.1:9" } } } ],
  "tokens": [ { "token": "$TOKEN", "tenant": "bench" } ],
  "limits": { "localPackageSources": true } }
JSON
"$MECORCH" serve --config "$W/config.json" --port-file "$W/port" >"$W/serve.log" 2>&1 &
PID=$!
for _ in $(seq 200); do [ -s "$W/port" ] && break; sleep 0.05; done
API=http://127.0.0.1:$(cat "$W/port")
H="Authorization: Bearer $TOKEN"
DIGEST=$("$ROOT/examples/serve/make-package.sh" git "$W/pkg")
curl -sf -H "$H" -H 'Content-Type: application/json' "$API/app_pkgm/v1/app_packages" \
	-d "{\"appPkgName\":\"bench\",\"appPkgVersion\":\"1\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$DIGEST\"},\"appPkgPath\":\"git+file://$W/pkg\"}" >/dev/null
for _ in $(seq 200); do
	[ "$(curl -s -H "$H" "$API/app_pkgm/v1/app_packages" | jq -r '.[0].onboardingState')" = ONBOARDED ] && break
	sleep 0.1
done
for i in $(seq "$NINST"); do
	curl -sf -H "$H" -H 'Content-Type: application/json' "$API/app_lcm/v1/app_instances" \
		-d "{\"appDId\":\"edge-echo-1.0.0\",\"appInstanceName\":\"bench-$i\"}" >/dev/null
done
bytes=$(curl -s -H "$H" "$API/app_lcm/v1/app_instances" | wc -c)
echo "GET /app_lcm/v1/app_instances: $NINST instances, $bytes bytes per response; wrk -t$THREADS -c$CONN -d${DUR}s"
wrk -t"$THREADS" -c"$CONN" -d"${DUR}s" --latency -H "$H" "$API/app_lcm/v1/app_instances" | tee "$W/wrk.out"
rps=$(awk '/^Requests\/sec/ {print $2}' "$W/wrk.out")
p99=$(awk '$1 == "99%" {print $2}' "$W/wrk.out")
echo "RESULT req/s=$rps p99=$p99 (goal: >= 20000 req/s on 2 cores)"
