#!/usr/bin/env bash
# test_api_prism.sh - api/openapi.yaml against what the server really does:
# Prism's validation proxy (api/prism, installed by scripts/install-api-test)
# stands in front of `mecorch serve` and checks every request and response
# of a full flow (packages, instances, operations, subscriptions, zones,
# federation, deployments, errors) against the document; a violation shows
# up as an sl-violations header, and there must be none.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_api.sh"

PRISM=$MO_SOURCE_DIR/api/prism/node_modules/.bin/prism
if [ ! -x "$PRISM" ]; then
	echo "missing $PRISM: run scripts/install-api-test" >&2
	exit 1
fi

lab_start
fed_start
api_config "$T/api.json"
api_start "$T/api.json"
SERVER=$API
# Prism takes its port on the command line: a free one, and another one
# when Prism could not have it (then it is not the process listening).
for try in 1 2 3 4 5; do
	PPORT=$(it_free_port)
	"$PRISM" proxy -h 127.0.0.1 -p "$PPORT" "$MO_SOURCE_DIR/api/openapi.yaml" "$SERVER" >>"$T/prism.log" 2>&1 &
	PRISM_PID=$!
	_it_track "$PRISM_PID"
	wait_listen "$PPORT" "$PRISM_PID" 120 && break
	kill -KILL "$PRISM_PID" 2>/dev/null
	wait "$PRISM_PID" 2>/dev/null
	PRISM_PID=
done
if [ -z "$PRISM_PID" ]; then
	echo "Prism did not start:" >&2
	tail -n 5 "$T/prism.log" >&2
	exit 1
fi
API=http://127.0.0.1:$PPORT
prism_up() { curl -s -o /dev/null --max-time 10 "$API/health"; }
poll_until 120 prism_up

VIOLATIONS=0
# pcall TOKEN METHOD PATH [BODY] [curl args]: call through Prism; count violations.
pcall() {
	local tok=$1 method=$2 path=$3 data=${4-}
	shift 3
	[ $# -gt 0 ] && shift
	rm -f "$T/phdr"
	call "$tok" "$method" "$path" "$data" -D "$T/phdr" "$@"
	if grep -qi '^sl-violations:' "$T/phdr"; then
		VIOLATIONS=$((VIOLATIONS + 1))
		_fail "contract: $method $path -> $S" "$(grep -i '^sl-violations:' "$T/phdr" | cut -c1-600)"
	else
		_pass "contract: $method $path -> $S"
	fi
}

say "through Prism: public endpoints"
pcall "" GET /health
pcall "" GET /metrics
pcall "$TA" GET /mecorch/v1/zones

say "packages"
DIGEST=$(make_pkg_repo "$T/pkgrepo")
pcall "$TA" POST /app_pkgm/v1/subscriptions "{\"subscriptionType\":\"AppPackageOnBoarding\",\"callbackUri\":\"$FED_URL/notify/pkg\"}"
SUB=$(body .id)
pcall "$TA" GET /app_pkgm/v1/subscriptions
pcall "$TA" GET "/app_pkgm/v1/subscriptions/$SUB"
pcall "$TA" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$DIGEST\"},\"appPkgPath\":\"git+file://$T/pkgrepo\"}"
PKG=$(body .id)
wait_for "onboarded" 120 pkg_is "$PKG" ONBOARDED
pcall "$TA" GET /app_pkgm/v1/app_packages
pcall "$TA" GET "/app_pkgm/v1/app_packages/$PKG"
pcall "$TA" GET "/app_pkgm/v1/app_packages/$PKG/appd"
pcall "$TA" GET /app_pkgm/v1/onboarded_app_packages/edge-echo-1.0.0/appd
pcall "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content"
pcall "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content" "" -H 'Range: bytes=0-99'
pcall "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content" "" -H 'Range: bytes=99999999-'
pcall "$TA" GET /app_pkgm/v1/app_packages/no-such-package
pcall "$TA" DELETE "/app_pkgm/v1/app_packages/$PKG"
ZSUM=$("$MO_SOURCE_DIR/examples/serve/make-package.sh" zip "$T/pkg.zip")
pcall "$TB" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"up\",\"appPkgVersion\":\"1\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"}}"
PKGB=$(body .id)
# Prism's proxy re-encodes binary request bodies, so the upload goes to the
# server directly; its 202 reply is checked through Prism with an empty body
# below (415 for a missing media type is part of the contract too).
API=$SERVER call "$TB" PUT "/app_pkgm/v1/app_packages/$PKGB/package_content" "" --data-binary "@$T/pkg.zip" -H 'Content-Type: application/zip'
check_eq "upload (direct): 202" 202 "$S"
wait_for "uploaded package onboarded" 120 pkg_is "$PKGB" ONBOARDED "$TB"

say "instances and operations"
pcall "$TA" POST /app_lcm/v1/subscriptions "{\"subscriptionType\":\"AppLcmOpOccStateChange\",\"callbackUri\":\"$FED_URL/notify/op\"}"
pcall "$TA" GET /app_lcm/v1/subscriptions
pcall "$TA" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0","appInstanceName":"p1"}'
I=$(body .id)
pcall "$TA" GET /app_lcm/v1/app_instances
pcall "$TA" POST "/app_lcm/v1/app_instances/$I/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-paris"}]}'
OP=$(curl -s -H "Authorization: Bearer $TA" "$SERVER/app_lcm/v1/app_lcm_op_occs" | jq -r '.[0].id')
wait_for "instantiated" 90 op_is "$OP" COMPLETED
pcall "$TA" GET "/app_lcm/v1/app_instances/$I"
pcall "$TA" GET /app_lcm/v1/app_lcm_op_occs
pcall "$TA" GET "/app_lcm/v1/app_lcm_op_occs?filter=(eq,lcmOperation,INSTANTIATE)&fields=operationParams"
pcall "$TA" GET "/app_lcm/v1/app_instances?filter=(eq,instantiatedAppState/operationalState,STARTED)&all_fields"
pcall "$TA" GET "/app_lcm/v1/app_instances?exclude_fields=appInstanceName,_links/terminate"
pcall "$TA" GET "/app_pkgm/v1/app_packages?exclude_default"
pcall "$TA" GET "/app_lcm/v1/app_instances?filter=(eq,nosuch,x)"
pcall "$TA" GET "/app_lcm/v1/app_lcm_op_occs/$OP"
pcall "$TA" POST "/app_lcm/v1/app_lcm_op_occs/$OP/retry"
pcall "$TA" POST "/app_lcm/v1/app_instances/$I/instantiate" '{}'
pcall "$TA" POST "/app_lcm/v1/app_instances/$I/operate" '{"changeStateTo":"STOPPED"}'
OP=$(curl -s -H "Authorization: Bearer $TA" "$SERVER/app_lcm/v1/app_lcm_op_occs" | jq -r '.[-1].id')
wait_for "stopped" 90 op_is "$OP" COMPLETED
pcall "$TA" POST "/app_lcm/v1/app_instances/$I/terminate" '{"terminationType":"GRACEFUL","gracefulTerminationTimeout":5}'
OP=$(curl -s -H "Authorization: Bearer $TA" "$SERVER/app_lcm/v1/app_lcm_op_occs" | jq -r '.[-1].id')
wait_for "terminated" 90 op_is "$OP" COMPLETED
pcall "$TA" DELETE "/app_lcm/v1/app_instances/$I"
pcall "$TA" GET "/app_lcm/v1/app_instances/$I"
call "" GET /app_lcm/v1/app_instances
check_eq "without a token: 401 (Prism flags the request itself)" 401 "$S"

say "federation and DevOps (operator)"
registered() { test "$(curl -s "$FED_URL/_stats" | jq .systems)" = 1; }
wait_for "registered" 90 registered
pcall "$TO" GET /mecorch/v1/federation/system
pcall "$TO" GET "/mecorch/v1/federation/systems?systemname=mecorch-it"
pcall "$TO" GET "/mecorch/v1/federation/systems?systemname=nobody"
pcall "$TO" PATCH /mecorch/v1/federation/system '{"systemName":"mecorch-it"}'
pcall "$TA" GET /mecorch/v1/deployments
mkdir -p "$T/devops/modules/generic"
cp "$GENERIC/module.lua" "$T/devops/modules/generic/"
printf '%s\n' 'local endpoint = variable("endpoint", { type = "string" })' \
	'module("net", { source = "./modules/generic", inputs = { endpoint = endpoint, collection = "networks", objects = { a = { x = 1 } } } })' \
	>"$T/devops/main.lua"
git -C "$T/devops" init -q -b main && git -C "$T/devops" add -A &&
	git -C "$T/devops" -c user.name=t -c user.email=t@example.invalid commit -q -m d
pcall "$TO" POST /mecorch/v1/deployments "{\"source\":\"git+file://$T/devops\",\"variables\":{\"endpoint\":\"$LAB_URL\"}}"
DEP=$(body .id)
dep_is() { [ "$(curl -s -H "Authorization: Bearer $TO" "$SERVER/mecorch/v1/deployments/$DEP" | jq -r .state)" = "$1" ]; }
wait_for "planned" 90 dep_is PLANNED
pcall "$TO" GET "/mecorch/v1/deployments/$DEP"
pcall "$TO" POST "/mecorch/v1/deployments/$DEP/apply"
wait_for "applied" 90 dep_is APPLIED
pcall "$TO" GET /mecorch/v1/deployments
pcall "$TO" GET "/mecorch/v1/deployments/$DEP/events"
pcall "$TO" POST "/mecorch/v1/deployments/$DEP/destroy"
wait_for "destroyed" 90 dep_is DESTROYED
pcall "$TO" DELETE "/mecorch/v1/deployments/$DEP"

check_eq "no contract violation in the whole flow" 0 "$VIOLATIONS"
finish
