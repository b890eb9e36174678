#!/usr/bin/env bash
# test_api.sh - the Mfm northbound over HTTP, end to end: `mecorch serve`
# registers with a MEC 040 federator (examples/lab/federator), onboards an
# application package from a git repository made here, instantiates it in a
# zone whose edge domain is a labcloud, delivers notifications (retried while
# the receiver fails), operates, terminates (labcloud empty) and deletes;
# FAILED_TEMP and retry; bad requests of every kind; isolation of two
# tenants; DevOps plan/apply/destroy; federation discovery; a server killed
# in the middle of an instantiate resumes it without orphans; an instantiate
# that fails part-way, or is cancelled, then failed, is terminated (labcloud
# empty) and deleted; notifications still in the outbox when the server is
# killed are delivered after the restart, each once and in order; a clean
# stop deregisters; local package sources are for operators unless the
# configuration opens them, while an http:// zip is open to tenants and its
# checksum verified; every onboarding state, observed in order, with the
# fetches held at their servers; the MEC 040 registration is retried until a
# federator that was down comes up.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/lib_api.sh"

lab_start
fed_start
api_config "$T/api.json"
api_start "$T/api.json"

say "health and MEC 040 registration"
call "" GET /health
check_eq "/health answers 200 without a token" 200 "$S"
wait_for "the server registered its MEC system with the federator" 90 fed_systems_is 1
reg=$(curl -s -H 'Authorization: Bearer federator-secret' \
	"$FED_URL/fed_enablement/v1/fed_resources/system_info?systemname=mecorch-it")
check_eq "the federator holds our SystemInfo (name, provider)" "mecorch-it lab.example" \
	"$(echo "$reg" | jq -r '.[0] | "\(.systemName) \(.systemProvider)"')"
SYSID=$(echo "$reg" | jq -r '.[0].systemId')
call "$TO" GET /mecorch/v1/federation/system
check_eq "federation/system shows the systemId the federator assigned" "true $SYSID" \
	"$(body '"\(.registered) \(.systemId)"')"

say "subscriptions (callbacks at the federator's receiver)"
call "$TA" POST /app_pkgm/v1/subscriptions \
	"{\"subscriptionType\":\"AppPackageOnBoarding\",\"callbackUri\":\"$FED_URL/notify/pkg\"}"
check_eq "POST app_pkgm subscription: 201" 201 "$S"
PKG_SUB=$(body .id)
call "$TA" POST /app_lcm/v1/subscriptions \
	"{\"subscriptionType\":\"AppLcmOpOccStateChange\",\"callbackUri\":\"$FED_URL/notify/op\"}"
check_eq "POST AppLcmOpOccStateChange subscription: 201" 201 "$S"
call "$TA" POST /app_lcm/v1/subscriptions \
	"{\"subscriptionType\":\"AppInstanceStateChange\",\"callbackUri\":\"$FED_URL/notify/inst\",\"appInstanceState\":[\"STARTED\",\"STOPPED\",\"NOT_INSTANTIATED\"]}"
check_eq "POST AppInstanceStateChange subscription: 201" 201 "$S"
call "$TA" GET /app_lcm/v1/subscriptions
check_eq "GET app_lcm subscriptions lists 2" 2 "$(body '._links.subscriptions | length')"
call "$TA" GET "/app_lcm/v1/subscriptions?subscriptiontype=AppInstanceStateChange"
check_eq "?subscriptiontype= (the v3.1.1 name) lists that type only" "200 1 AppInstanceStateChange" \
	"$S $(body '._links.subscriptions | "\(length) \(.[0].subscriptionType)"')"
call "$TA" GET "/app_lcm/v1/subscriptions?subscription_type=AppLcmOpOccStateChange"
check_eq "?subscription_type= (the earlier name) filters too" "200 1 AppLcmOpOccStateChange" \
	"$S $(body '._links.subscriptions | "\(length) \(.[0].subscriptionType)"')"
call "$TA" GET "/app_lcm/v1/subscriptions?subscriptiontype=AppLcmOpOccStateChange&subscription_type=AppInstanceStateChange"
check_eq "both names with different values: 400" 400 "$S"
call "$TA" GET "/app_pkgm/v1/subscriptions/$PKG_SUB"
check_eq "GET one subscription" "$FED_URL/notify/pkg" "$(body .callbackUri)"

say "onboard a package from a git repository"
DIGEST=$(make_pkg_repo "$T/pkgrepo")
call "$TA" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",
	\"appProvider\":\"lab.example\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$DIGEST\"},
	\"appPkgPath\":\"git+file://$T/pkgrepo?ref=v1.0.0\",\"userDefinedData\":{\"team\":\"edge\"}}" -D "$T/hdr"
check_eq "POST app_packages: 201" 201 "$S"
PKG=$(body .id)
check_true "Location names the package" grep -qi "^Location: .*/app_pkgm/v1/app_packages/$PKG" "$T/hdr"
wait_for "the package reaches ONBOARDED" 120 pkg_is "$PKG" ONBOARDED
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG"
check_eq "AppPkgInfo: appDId, ENABLED, NOT_IN_USE, userDefinedData" "edge-echo-1.0.0 ENABLED NOT_IN_USE edge" \
	"$(body '"\(.appDId) \(.operationalState) \(.usageState) \(.userDefinedData.team)"')"
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG/appd"
check_eq "GET appd returns the AppD" "edge-echo 1.0.0" "$(body '"\(.appName) \(.appSoftVersion)"')"
call "$TA" GET "/app_pkgm/v1/onboarded_app_packages/edge-echo-1.0.0/appd"
check_eq "GET onboarded_app_packages/{appDId}/appd: 200" 200 "$S"
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content"
check_eq "GET package_content: 200" 200 "$S"
check_true "the content is a zip holding appd.json and plan.lua" \
	python3 -c "import zipfile,sys; n=zipfile.ZipFile(sys.argv[1]).namelist(); sys.exit(0 if 'appd.json' in n and 'plan.lua' in n else 1)" "$T/body"
size=$(stat -c %s "$T/body")
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content" "" -H 'Range: bytes=0-9' -D "$T/hdr"
check_eq "Range bytes=0-9: 206 with 10 bytes" "206 10" "$S $(stat -c %s "$T/body")"
check_true "Content-Range: bytes 0-9/size" grep -qi "^Content-Range: bytes 0-9/$size" "$T/hdr"
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG/package_content" "" -H "Range: bytes=$((size + 10))-"
check_eq "an unsatisfiable Range: 416" 416 "$S"
# functions, so wait_for evaluates the received notifications on every try
pkg_notified() {
	test "$(received pkg | jq -r 'select(.notificationType == "AppPackageOnBoarded") | .appPkgId')" = "$PKG"
}
wait_for "AppPackageOnBoarded notification delivered" 90 pkg_notified

say "onboarding failures"
call "$TA" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"bad-sum\",\"appPkgVersion\":\"1\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$(printf '%064d' 0)\"},\"appPkgPath\":\"git+file://$T/pkgrepo\"}"
BAD=$(body .id)
wait_for "a wrong checksum sends the package back to CREATED" 120 pkg_is "$BAD" CREATED
call "$TA" GET "/app_pkgm/v1/app_packages/$BAD"
check_true "onboardingFailureDetails says checksum mismatch" \
	grep -q "checksum mismatch" <(body .onboardingFailureDetails.detail)
check_eq "... without the digest the server computed for the fetched source" false \
	"$(body ".onboardingFailureDetails.detail | contains(\"$DIGEST\")")"
PASSWD_SUM=$(sha256sum /etc/passwd | cut -d' ' -f1)
call "$TA" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"passwd\",\"appPkgVersion\":\"1\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$(printf '%064d' 0)\"},\"appPkgPath\":\"file:///etc/passwd\"}"
check_eq "file:///etc/passwd as a tenant where limits.localPackageSources is on: 201" 201 "$S"
BADP=$(body .id)
wait_for "... its onboarding fails (CREATED)" 120 pkg_is "$BADP" CREATED
call "$TA" GET "/app_pkgm/v1/app_packages/$BADP"
check_eq "... and the failure does not tell the file's SHA-256" "true false" \
	"$(body ".onboardingFailureDetails.detail | \"\\(contains(\"checksum mismatch\")) \\(contains(\"$PASSWD_SUM\"))\"")"
call "$TA" DELETE "/app_pkgm/v1/app_packages/$BADP"
call "$TA" DELETE "/app_pkgm/v1/app_packages/$BAD"
check_eq "a failed (DISABLED, unused) package can be deleted: 204" 204 "$S"

say "upload a zip (tenant b)"
# (UPLOADING and PROCESSING pass too fast to be seen here: "onboarding states,
# in order" below holds them.)
ZSUM=$("$MO_SOURCE_DIR/examples/serve/make-package.sh" zip "$T/pkg.zip")
call "$TB" POST /app_pkgm/v1/app_packages \
	"{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"}}"
check_eq "POST without appPkgPath: 201 CREATED" "201 CREATED" "$S $(body .onboardingState)"
PKGB=$(body .id)
call "$TB" PUT "/app_pkgm/v1/app_packages/$PKGB/package_content" "" --data-binary "@$T/pkg.zip" -H 'Content-Type: text/plain'
check_eq "PUT package_content as text/plain: 415" 415 "$S"
call "$TB" PUT "/app_pkgm/v1/app_packages/$PKGB/package_content" "" --data-binary "@$T/pkg.zip" -H 'Content-Type: application/zip'
check_eq "PUT package_content application/zip: 202" 202 "$S"
wait_for "the uploaded package reaches ONBOARDED" 120 pkg_is "$PKGB" ONBOARDED "$TB"
head -c 2000000 /dev/zero >"$T/big.zip"
call "$TB" POST /app_pkgm/v1/app_packages \
	"{\"appPkgName\":\"big\",\"appPkgVersion\":\"1\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"}}"
BIG=$(body .id)
call "$TB" PUT "/app_pkgm/v1/app_packages/$BIG/package_content" "" --data-binary "@$T/big.zip" -H 'Content-Type: application/zip'
check_eq "a package over limits.maxPackageBytes: 413" 413 "$S"

say "tenant isolation"
call "$TB" GET /app_pkgm/v1/app_packages
check_eq "tenant b lists only its own packages" "$PKGB $BIG" "$(body '[.[].id] | join(" ")')"
call "$TB" GET "/app_pkgm/v1/app_packages/$PKG"
check_eq "tenant b cannot read tenant a's package: 404" 404 "$S"
call "$TB" GET "/app_pkgm/v1/subscriptions/$PKG_SUB"
check_eq "tenant b cannot read tenant a's subscription: 404" 404 "$S"
call "$TO" GET /app_pkgm/v1/app_packages
check_eq "the operator sees both tenants' packages" 3 "$(body length)"

say "instantiate in a zone chosen by selectedMECHostInfo"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0","appInstanceName":"echo-1","appInstanceDescription":"first"}' -D "$T/hdr"
check_eq "POST app_instances: 201 NOT_INSTANTIATED" "201 NOT_INSTANTIATED" "$S $(body .instantiationState)"
I1=$(body .id)
check_true "Location names the instance" grep -qi "^Location: .*/app_lcm/v1/app_instances/$I1" "$T/hdr"
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG"
check_eq "the package is IN_USE" IN_USE "$(body .usageState)"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-berlin","hostName":"Berlin edge"}]}' -D "$T/hdr"
check_eq "POST instantiate: 202" 202 "$S"
OP1=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
check_true "Location names an app_lcm_op_occs resource" test -n "$OP1"
wait_for "the INSTANTIATE operation COMPLETES" 90 op_is "$OP1" COMPLETED
call "$TA" GET "/app_lcm/v1/app_instances/$I1"
check_eq "the instance is INSTANTIATED, STARTED, in zone-berlin" "INSTANTIATED STARTED zone-berlin" \
	"$(body '"\(.instantiationState) \(.instantiatedAppState.operationalState) \(.instantiatedAppState.mecHostInfo.hostId.zoneId)"')"
check_eq "labcloud holds the app and its DNS record" 2 "$(lab_total)"
check_eq "the app object runs in zone-berlin with 1 replica" "zone-berlin 1" \
	"$(lab_items apps | jq -r '.[0] | "\(.zone) \(.replicas)"')"
MECORCH_STATE=$T/data/instances/$I1/state.db
export MECORCH_STATE
mo state list --state "$MECORCH_STATE"
check_eq "mecorch state list --state <instance db> shows 2 resources" 2 "$(grep -c . "$OUT")"
check_lab_matches_state "labcloud objects == the instance's state"
call "$TA" GET "/app_lcm/v1/app_lcm_op_occs/$OP1"
check_eq "the op occurrence: INSTANTIATE, links to its instance" "INSTANTIATE $API/app_lcm/v1/app_instances/$I1" \
	"$(body '"\(.lcmOperation) \(._links.appInstance.href)"')"
op1_notified() {
	test "$(received op | jq -r --arg o "$OP1" 'select(.appLcmOpOccId == $o) | .operationState' | tr '\n' ' ')" = "STARTING PROCESSING COMPLETED "
}
wait_for "AppLcmOpOccNotification STARTING, PROCESSING, COMPLETED delivered in order" 90 op1_notified
# the AppInstNotifications of instance $1 say the states $2, in this order
inst_states_are() {
	test "$(received inst | jq -r --arg i "$1" 'select(.appInstanceId == $i) | .appInstanceState' |
		tr '\n' ' ' | sed 's/ $//')" = "$2"
}
wait_for "AppInstNotification STARTED delivered" 90 inst_states_are "$I1" STARTED

say "ETSI attribute filter and selectors on the collections"
call "$TA" GET "/app_lcm/v1/app_instances?filter=(eq,instantiationState,INSTANTIATED)"
check_eq "filter (eq,instantiationState,INSTANTIATED): 200, the instance" "200 $I1" "$S $(body '[.[].id] | join(",")')"
call "$TA" GET "/app_lcm/v1/app_instances?filter=(eq,instantiatedAppState/mecHostInfo/hostId/zoneId,zone-berlin);(eq,appName,$(body '.[0].appName'))"
check_eq "filter on a nested path and the app name: the instance" "200 $I1" "$S $(body '[.[].id] | join(",")')"
call "$TA" GET "/app_lcm/v1/app_instances?filter=(in,instantiationState,NOT_INSTANTIATED)"
check_eq "filter matching nothing: 200 and []" "200 0" "$S $(body length)"
call "$TA" GET /app_lcm/v1/app_instances
check_eq "no selector is exclude_default: _links.self kept, _links.terminate dropped" "true false" \
	"$(body '.[0]._links | "\(has("self")) \(has("terminate"))"')"
call "$TA" GET "/app_lcm/v1/app_instances?all_fields"
check_eq "all_fields: _links.terminate present" "true" "$(body '.[0]._links | has("terminate")')"
call "$TA" GET "/app_lcm/v1/app_instances?filter=(eq,appNmae,x)" "" -D "$T/hdr"
check_eq "a filter naming an unknown attribute: 400 problem naming it" "400 true" \
	"$S $(body '.detail | contains("appNmae")')"
check_true "... as application/problem+json" grep -qi '^Content-Type: application/problem+json' "$T/hdr"
call "$TA" GET "/app_lcm/v1/app_instances?exclude_fields=appName"
check_eq "excluding a required attribute: 400" 400 "$S"
call "$TA" GET "/app_lcm/v1/app_instances?all_fields&exclude_default"
check_eq "all_fields with exclude_default: 400" 400 "$S"
call "$TA" GET "/app_lcm/v1/app_lcm_op_occs?filter=(eq,lcmOperation,INSTANTIATE)"
check_eq "op occurrences filtered by lcmOperation, operationParams excluded by default" "200 $OP1 false" \
	"$S $(body '[.[].id] | join(",")') $(body '.[0] | has("operationParams")')"
call "$TA" GET "/app_lcm/v1/app_lcm_op_occs?fields=operationParams&filter=(eq,operationState,COMPLETED)"
check_eq "fields=operationParams brings it back" "200 zone-berlin" \
	"$S $(body '.[0].operationParams.selectedMECHostInfo[0].hostId')"
call "$TA" GET "/app_pkgm/v1/app_packages?filter=(eq,appDId,edge-echo-1.0.0)"
check_eq "packages by appDId; userDefinedData excluded by default" "200 $PKG false" \
	"$S $(body '[.[].id] | join(",")') $(body '.[0] | has("userDefinedData")')"
call "$TA" GET "/app_pkgm/v1/app_packages?fields=userDefinedData&filter=(cont,userDefinedData/team,dg)"
check_eq "fields=userDefinedData, filtered on a substring of it" "200 edge" "$S $(body '.[0].userDefinedData.team')"
call "$TB" GET "/app_pkgm/v1/app_packages?filter=(eq,userDefinedData/team,edge)"
check_eq "the same filter as tenant b does not reach tenant a's package" "200 0" "$S $(body length)"
call "$TO" GET "/app_pkgm/v1/app_packages?filter=(eq,userDefinedData/team,edge)"
check_eq "... but the operator's does" "200 $PKG" "$S $(body '[.[].id] | join(",")')"

say "bad requests"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":'
check_eq "malformed JSON: 400" 400 "$S"
check_eq "errors are RFC 7807 problem details" "400 Bad Request" "$(body '"\(.status) \(.title)"')"
curl -s -o /dev/null -D "$T/hdr" -H "Authorization: Bearer $TA" -H 'Content-Type: application/json' -d '{' "$API/app_lcm/v1/app_instances"
check_true "Content-Type: application/problem+json" grep -qi '^Content-Type: application/problem+json' "$T/hdr"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":42}'
check_eq "appDId of the wrong type: 400" 400 "$S"
call "$TA" POST /app_lcm/v1/app_instances '[1,2]'
check_eq "a body that is not an object: 400" 400 "$S"
call "$TA" POST /app_lcm/v1/app_instances '{}'
check_eq "appDId missing: 400" 400 "$S"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":"no-such-appd"}'
check_eq "an unknown appDId: 404" 404 "$S"
S=$(curl -s -o "$T/body" -w '%{http_code}' -H "Authorization: Bearer $TA" -H 'Content-Type: text/plain' \
	-d '{"appDId":"edge-echo-1.0.0"}' "$API/app_lcm/v1/app_instances")
check_eq "a JSON body sent as text/plain: 415" 415 "$S"
call "$TA" POST /app_lcm/v1/app_instances "{\"appDId\":\"$(head -c 70000 /dev/zero | tr '\0' a)\"}"
check_eq "a body over limits.maxBodyBytes: 413" 413 "$S"
call "$TA" GET /app_lcm/v1/app_instances/no-such-instance
check_eq "an unknown instance id: 404" 404 "$S"
call "$TA" GET /app_lcm/v1/app_lcm_op_occs/no-such-op
check_eq "an unknown op occurrence id: 404" 404 "$S"
call "$TA" GET /app_lcm/v1/nothing-here
check_eq "an unknown path: 404" 404 "$S"
call "$TA" PUT /app_lcm/v1/app_instances "" -D "$T/hdr"
check_eq "PUT on app_instances: 405" 405 "$S"
check_true "405 comes with Allow: POST, GET" grep -qi '^Allow: POST, GET' "$T/hdr"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/instantiate" '{}'
check_eq "instantiate an INSTANTIATED instance: 409" 409 "$S"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/operate" '{"changeStateTo":"PAUSED"}'
check_eq "operate with changeStateTo outside the enum: 400" 400 "$S"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/operate" '{"changeStateTo":"STARTED"}'
check_eq "operate to the state it is in: 409" 409 "$S"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/terminate" '{"terminationType":"SOON"}'
check_eq "terminate with a bad terminationType: 400" 400 "$S"
call "$TA" DELETE "/app_lcm/v1/app_instances/$I1"
check_eq "delete an INSTANTIATED instance: 409" 409 "$S"
call "$TA" POST "/app_lcm/v1/app_lcm_op_occs/$OP1/retry"
check_eq "retry a COMPLETED operation: 409" 409 "$S"
call "$TA" POST "/app_lcm/v1/app_lcm_op_occs/$OP1/fail"
check_eq "fail a COMPLETED operation: 409" 409 "$S"
call "$TA" DELETE "/app_pkgm/v1/app_packages/$PKG"
check_eq "delete an ENABLED package: 409" 409 "$S"
call "$TA" PATCH "/app_pkgm/v1/app_packages/$PKG" '{"operationalState":"SOMETIMES"}'
check_eq "PATCH with a bad operationalState: 400" 400 "$S"
call "$TA" POST /app_pkgm/v1/app_packages '{"appPkgName":"x","appPkgVersion":"1","checksum":{"algorithm":"MD5","hash":"00"}}'
check_eq "an unsupported checksum algorithm: 400" 400 "$S"
call "$TA" POST /app_pkgm/v1/app_packages '{"appPkgName":"x","appPkgVersion":"1","checksum":{"algorithm":"SHA-256","hash":"0000000000000000000000000000000000000000000000000000000000000000"},"appPkgPath":"git+https://ci:hunter2-token@git.example/app.git"}'
check_eq "an appPkgPath with credentials: 400, not echoed" "400 false" "$S $(body '.detail | contains("hunter2")')"
call "$TO" POST /mecorch/v1/deployments '{"source":"git+https://tok3n-abc@git.example/plans.git"}'
check_eq "a deployment source with a token in it: 400, not echoed" "400 false" "$S $(body '.detail | contains("tok3n")')"
call "$TA" POST /app_lcm/v1/subscriptions '{"subscriptionType":"Nope","callbackUri":"http://127.0.0.1:1/x"}'
check_eq "an unknown subscriptionType: 400" 400 "$S"
call "$TA" POST /app_lcm/v1/subscriptions '{"subscriptionType":"AppLcmOpOccStateChange","callbackUri":"ftp://x"}'
check_eq "a callbackUri that is not http(s): 400" 400 "$S"
call "" GET /app_lcm/v1/app_instances "" -D "$T/hdr"
check_eq "no token: 401" 401 "$S"
check_true "401 comes with WWW-Authenticate: Bearer" grep -qi '^WWW-Authenticate: Bearer' "$T/hdr"
call "not-a-valid-token" GET /app_lcm/v1/app_instances
check_eq "an unknown token: 401" 401 "$S"
call "$TA" GET /mecorch/v1/deployments
check_eq "a tenant on the operators' DevOps endpoints: 403" 403 "$S"
call "$TB" GET "/app_lcm/v1/app_instances/$I1"
check_eq "tenant b cannot see tenant a's instance: 404" 404 "$S"
call "$TB" POST "/app_lcm/v1/app_instances/$I1/terminate" '{}'
check_eq "tenant b cannot terminate tenant a's instance: 404" 404 "$S"
call "$TB" GET /app_lcm/v1/app_lcm_op_occs
check_eq "tenant b sees none of tenant a's op occurrences" 0 "$(body length)"

say "notifications are retried with backoff while the receiver fails"
curl -s -X PUT "$FED_URL/_config" -d '{"notifyStatus":503,"notifyFailures":3}' >/dev/null
call "$TA" POST "/app_lcm/v1/app_instances/$I1/operate" '{"changeStateTo":"STOPPED","stopType":"GRACEFUL"}' -D "$T/hdr"
check_eq "operate STOPPED: 202" 202 "$S"
OP2=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
wait_for "the OPERATE operation COMPLETES" 90 op_is "$OP2" COMPLETED
check_eq "labcloud: the app has 0 replicas and state STOPPED" "0 STOPPED" \
	"$(lab_items apps | jq -r '.[0] | "\(.replicas) \(.state)"')"
# a function, so wait_for evaluates the received notifications on every try
op2_notified() {
	test "$(received op | jq -r --arg o "$OP2" 'select(.appLcmOpOccId == $o) | .operationState' | tr '\n' ' ')" = "STARTING PROCESSING COMPLETED "
}
wait_for "after 3 failures, every OPERATE notification arrives, in order" 120 op2_notified
call "$TO" GET /metrics
check_true "/metrics counts failed notification attempts" grep -q '^mecorch_notification_failures_total [1-9]' "$T/body"

say "FAILED_TEMP, then retry"
lab_config '{"fail_rate":1}'
call "$TA" POST "/app_lcm/v1/app_instances/$I1/operate" '{"changeStateTo":"STARTED"}' -D "$T/hdr"
OP3=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
wait_for "with labcloud failing, the operation ends FAILED_TEMP" 120 op_is "$OP3" FAILED_TEMP
call "$TA" GET "/app_lcm/v1/app_lcm_op_occs/$OP3"
check_true "the op occurrence carries the error as ProblemDetails" test -n "$(body .error.detail)"
call "$TA" POST "/app_lcm/v1/app_instances/$I1/terminate" '{}'
check_eq "another task while an operation is FAILED_TEMP: 409" 409 "$S"
lab_config '{"fail_rate":0}'
call "$TA" POST "/app_lcm/v1/app_lcm_op_occs/$OP3/retry"
check_eq "retry: 202" 202 "$S"
wait_for "the retried operation COMPLETES" 90 op_is "$OP3" COMPLETED
check_eq "labcloud: the app runs again" "1 STARTED" "$(lab_items apps | jq -r '.[0] | "\(.replicas) \(.state)"')"

say "placement by locationConstraints (nearest zone by geolocation)"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0","appInstanceName":"echo-2"}'
I2=$(body .id)
call "$TA" POST "/app_lcm/v1/app_instances/$I2/instantiate" \
	'{"locationConstraints":{"countryCode":"FR","area":{"type":"Point","coordinates":[2.29,48.86]}}}' -D "$T/hdr"
OP4=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
wait_for "the second instance is instantiated" 90 op_is "$OP4" COMPLETED
call "$TA" GET "/app_lcm/v1/app_instances/$I2"
check_eq "a point in Paris places it in zone-paris" zone-paris "$(body .instantiatedAppState.mecHostInfo.hostId.zoneId)"
call "$TA" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0"}'
I3=$(body .id)
call "$TA" POST "/app_lcm/v1/app_instances/$I3/instantiate" '{"locationConstraints":{"countryCode":"JP"}}'
check_eq "a country with no zone: 400" 400 "$S"
call "$TA" POST "/app_lcm/v1/app_instances/$I3/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-nowhere"}]}'
check_eq "an unknown zone in selectedMECHostInfo: 400" 400 "$S"

say "a server killed in the middle of an instantiate resumes it"
lab_config '{"latency_ms":400}'
call "$TA" POST "/app_lcm/v1/app_instances/$I3/instantiate" '{"selectedMECHostInfo":[{"hostId":{"zoneId":"zone-paris"}}]}' -D "$T/hdr"
OP5=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
wait_for "the operation is PROCESSING" 90 op_is "$OP5" PROCESSING
sleep 0.5
api_stop KILL
check_true "the server is gone (SIGKILL)" sh -c "! kill -0 $API_PID 2>/dev/null"
lab_config '{"latency_ms":0}'
api_start "$T/api.json"
wait_for "after the restart the operation resumes and COMPLETES" 90 op_is "$OP5" COMPLETED
MECORCH_STATE=$T/data/instances/$I3/state.db
call "$TA" GET "/app_lcm/v1/app_instances/$I3"
check_eq "the instance is INSTANTIATED" INSTANTIATED "$(body .instantiationState)"
check_eq "labcloud holds 2 objects per instance (3 instances)" 6 "$(lab_total)"
dups=$(for c in apps dns; do lab_items $c | jq -r --arg c "$c" '.[] | "\($c)/\(.name)"'; done | sort | uniq -d)
check_eq "no object was created twice across the restart" "" "$dups"

say "notifications pending at a SIGKILL are delivered after the restart, each once"
# The receiver answers 503 until after the restart, so no delivery can have
# succeeded (and none be repeated) before the kill.
pending_is() { [ "$(metric mecorch_notifications_pending)" = "$1" ]; }
failures_above() { [ "$(metric mecorch_notification_failures_total)" -gt "$1" ]; }
wait_for "every earlier notification is delivered (the outbox is empty)" 120 pending_is 0
recv_fail
NREC=$(received_count)
FAILS=$(metric mecorch_notification_failures_total)
call "$TA" POST "/app_lcm/v1/app_instances/$I1/operate" '{"changeStateTo":"STOPPED","stopType":"GRACEFUL"}' -D "$T/hdr"
check_eq "operate STOPPED: 202" 202 "$S"
OP6=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
wait_for "the OPERATE COMPLETES while the receiver answers 503" 90 op_is "$OP6" COMPLETED
check_eq "its notifications wait in the outbox: STARTING, PROCESSING, COMPLETED and the STOPPED instance" 4 \
	"$(metric mecorch_notifications_pending)"
wait_for "the notifier has tried and failed to deliver them" 60 failures_above "$FAILS"
check_eq "the receiver has recorded none of them" "$NREC" "$(received_count)"
api_stop KILL
check_true "the server is gone (SIGKILL)" sh -c "! kill -0 $API_PID 2>/dev/null"
api_start "$T/api.json"
check_eq "after the restart the 4 notifications are still pending" 4 "$(metric mecorch_notifications_pending)"
check_eq "... and still none was recorded (the receiver fails)" "$NREC" "$(received_count)"
recv_ok
wait_for "once the receiver answers 2xx the outbox drains" 120 pending_is 0
check_eq "the OPERATE's notifications arrived once each, in order" "STARTING PROCESSING COMPLETED" \
	"$(received op "$NREC" | jq -r --arg o "$OP6" 'select(.appLcmOpOccId == $o) | .operationState' | tr '\n' ' ' | sed 's/ $//')"
check_eq "the instance's STOPPED notification arrived once" 1 \
	"$(received inst "$NREC" | jq -r --arg i "$I1" 'select(.appInstanceId == $i and .appInstanceState == "STOPPED") | .id' | wc -l)"
check_eq "no notification was recorded twice (by id)" "" \
	"$(curl -s "$FED_URL/_notifications" | jq -r '.items[].body.id' | sort | uniq -d)"

say "DevOps: plan from git, review, apply, events, destroy"
mkdir -p "$T/devops/modules/generic"
cp "$GENERIC/module.lua" "$T/devops/modules/generic/"
cat >"$T/devops/main.lua" <<'LUA'
local endpoint = variable("endpoint", { type = "string" })
local net = module("net", { source = "./modules/generic",
  inputs = { endpoint = endpoint, collection = "networks", objects = { core = { cidr = "10.9.0.0/24" } } } })
output("net_id", net.ids.core)
LUA
git -C "$T/devops" init -q -b main && git -C "$T/devops" add -A &&
	git -C "$T/devops" -c user.name=t -c user.email=t@example.invalid commit -q -m devops
call "$TO" POST /mecorch/v1/deployments "{\"name\":\"core-net\",\"source\":\"git+file://$T/devops?ref=main\",\"planFile\":\"main.lua\",\"variables\":{\"endpoint\":\"$LAB_URL\"}}"
check_eq "POST deployments: 201 PLANNING" "201 PLANNING" "$S $(body .state)"
DEP=$(body .id)
dep_is() { [ "$(curl -s -H "Authorization: Bearer $TO" "$API/mecorch/v1/deployments/$DEP" | jq -r .state)" = "$1" ]; }
wait_for "the deployment is PLANNED" 90 dep_is PLANNED
call "$TO" GET "/mecorch/v1/deployments/$DEP"
check_eq "the plan (JSON) creates one resource" "1 create" \
	"$(body '"\(.plan.resource_changes | length) \(.plan.resource_changes[0].change.actions[0])"')"
before=$(lab_total)
check_eq "planning changed nothing in labcloud" 6 "$before" || lab_pairs
call "$TO" POST "/mecorch/v1/deployments/$DEP/apply"
check_eq "apply: 202" 202 "$S"
wait_for "the deployment is APPLIED" 90 dep_is APPLIED
call "$TO" GET "/mecorch/v1/deployments/$DEP"
check_eq "the apply created 1 resource; output net_id is labcloud's id" "1 $(lab_items networks | jq -r '.[0].id')" \
	"$(body '"\(.result.created) \(.outputs.net_id)"')"
call "$TO" GET "/mecorch/v1/deployments/$DEP/events"
check_true "events record the create" test "$(body '[.[] | select(.type == "ok" and .action == "create")] | length')" -ge 1
call "$TO" POST "/mecorch/v1/deployments/$DEP/apply"
check_eq "apply again without a new plan: 409" 409 "$S"
call "$TO" DELETE "/mecorch/v1/deployments/$DEP"
check_eq "delete a deployment holding resources: 409" 409 "$S"
call "$TO" POST "/mecorch/v1/deployments/$DEP/destroy"
wait_for "the deployment is DESTROYED" 90 dep_is DESTROYED
check_eq "labcloud has no networks left" 0 "$(lab_items networks | jq length)"
call "$TO" DELETE "/mecorch/v1/deployments/$DEP"
check_eq "delete the destroyed deployment: 204" 204 "$S"

say "federation discovery and update"
call "$TO" GET "/mecorch/v1/federation/systems?systemname=mecorch-it"
check_eq "discovery by name finds us" "$SYSID" "$(body '.[0].systemId')"
call "$TO" GET "/mecorch/v1/federation/systems?systemname=no-such-system"
check_eq "discovery that matches nothing: 404" 404 "$S"
call "$TA" GET "/mecorch/v1/federation/systems"
check_eq "discovery is for operators: 403" 403 "$S"
call "$TO" PATCH /mecorch/v1/federation/system '{"systemName":"mecorch-it-2"}'
check_eq "PATCH federation/system: 200" 200 "$S"
renamed() {
	test "$(curl -s -H 'Authorization: Bearer federator-secret' \
		"$FED_URL/fed_enablement/v1/fed_resources/system_info/$SYSID" | jq -r .systemName)" = mecorch-it-2
}
wait_for "the federator sees the new name (PATCH system_info)" 90 renamed
call "$TA" GET /mecorch/v1/zones
check_eq "zones lists both zones" "zone-paris zone-berlin" "$(body '[.[].zoneId] | join(" ")')"

say "terminate everything; labcloud ends empty"
for I in "$I1" "$I2" "$I3"; do
	call "$TA" POST "/app_lcm/v1/app_instances/$I/terminate" '{"terminationType":"FORCEFUL"}' -D "$T/hdr"
	OPT=$(grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n')
	wait_for "terminate $I completes" 90 op_is "$OPT" COMPLETED
done
check_eq "labcloud is empty" 0 "$(lab_total)" || lab_pairs
wait_for "AppInstNotification NOT_INSTANTIATED delivered, after every earlier state once, in order" 90 \
	inst_states_are "$I1" "STARTED STOPPED STARTED STOPPED NOT_INSTANTIATED"
for I in "$I1" "$I2" "$I3"; do
	call "$TA" DELETE "/app_lcm/v1/app_instances/$I"
	check_eq "delete instance: 204" 204 "$S"
done
call "$TA" PATCH "/app_pkgm/v1/app_packages/$PKG" '{"operationalState":"DISABLED"}'
check_eq "disable the package: 200" 200 "$S"
call "$TA" DELETE "/app_pkgm/v1/app_packages/$PKG"
check_eq "delete the disabled, unused package: 204" 204 "$S"
call "$TA" GET "/app_pkgm/v1/app_packages/$PKG"
check_eq "the deleted package is gone: 404" 404 "$S"

say "metrics"
call "" GET /metrics
check_true "requests by route and status" grep -q 'mecorch_api_requests_total{method="POST",route="/app_lcm/v1/app_instances/{appInstanceId}/terminate",status="202"} 3' "$T/body"
check_true "a latency histogram" grep -q 'mecorch_api_request_duration_seconds_bucket{le="+Inf"}' "$T/body"
check_true "operations by state" grep -q '^mecorch_lcm_operations{operation_state="COMPLETED"}' "$T/body"
check_true "resources under management (0 now)" grep -q '^mecorch_resources_under_management 0' "$T/body"
call "" GET /openapi.yaml
check_true "/openapi.yaml is served" grep -q '^openapi: 3' "$T/body"

say "an instantiate that fails part-way: fail it, terminate, delete (nothing orphaned)"
# Tenant b's package.  labcloud holds the app object's POST (latency) while
# fail_rate turns on, so the app is created and the DNS record after it fails.
loc_op() { grep -i '^Location:' "$T/hdr" | sed 's|.*/app_lcm_op_occs/||' | tr -d '\r\n'; }
lab_posts_are() { [ "$(lab_stat .requests.POST)" = "$1" ]; }
lab_reset_stats
lab_config '{"latency_ms":3000}'
call "$TB" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0","appInstanceName":"half"}'
IH=$(body .id)
call "$TB" POST "/app_lcm/v1/app_instances/$IH/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-paris"}]}' -D "$T/hdr"
OPH=$(loc_op)
wait_for "the app object's POST reaches labcloud" 90 lab_posts_are 1
lab_config '{"fail_rate":1,"latency_ms":0}'
wait_for "the instantiate ends FAILED_TEMP" 120 op_is "$OPH" FAILED_TEMP "$TB"
lab_config '{"fail_rate":0}'
check_eq "labcloud holds the app object, no DNS record" "1 0" \
	"$(lab_items apps | jq length) $(lab_items dns | jq length)"
call "$TB" POST "/app_lcm/v1/app_lcm_op_occs/$OPH/fail"
check_eq "fail the operation: 200 FAILED" "200 FAILED" "$S $(body .operationState)"
call "$TB" GET "/app_lcm/v1/app_instances/$IH"
check_eq "the instance is NOT_INSTANTIATED" NOT_INSTANTIATED "$(body .instantiationState)"
call "$TB" DELETE "/app_lcm/v1/app_instances/$IH"
check_eq "delete it while it holds what the failed instantiate made: 409" "409 true" \
	"$S $(body '.detail | contains("still holds resources")')"
call "$TB" POST "/app_lcm/v1/app_instances/$IH/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-berlin"}]}'
check_eq "instantiate it in another zone meanwhile: 409" 409 "$S"
call "$TB" POST "/app_lcm/v1/app_instances/$IH/terminate" '{}' -D "$T/hdr"
check_eq "terminate it: 202" 202 "$S"
OPT=$(loc_op)
wait_for "the terminate COMPLETES" 90 op_is "$OPT" COMPLETED "$TB"
check_eq "labcloud is empty again" 0 "$(lab_total)" || lab_pairs
call "$TB" DELETE "/app_lcm/v1/app_instances/$IH"
check_eq "then the instance can be deleted: 204" 204 "$S"

say "cancel an instantiate while PROCESSING: fail it, terminate, delete"
# The cancel lands while labcloud holds the app object's POST: the run lets
# it finish, starts nothing more (no DNS record) and ends FAILED_TEMP.
lab_reset_stats
lab_config '{"latency_ms":3000}'
call "$TB" POST /app_lcm/v1/app_instances '{"appDId":"edge-echo-1.0.0","appInstanceName":"cancelled"}'
IC=$(body .id)
call "$TB" POST "/app_lcm/v1/app_instances/$IC/instantiate" '{"selectedMECHostInfo":[{"hostId":"zone-berlin"}]}' -D "$T/hdr"
OPC=$(loc_op)
wait_for "the instantiate is PROCESSING" 90 op_is "$OPC" PROCESSING "$TB"
wait_for "... with the app object's POST in labcloud" 90 lab_posts_are 1
call "$TB" POST "/app_lcm/v1/app_lcm_op_occs/$OPC/cancel" '{"cancelMode":"GRACEFUL"}'
check_eq "cancel: 202" 202 "$S"
lab_config '{"latency_ms":0}'
wait_for "the cancelled instantiate ends FAILED_TEMP" 120 op_is "$OPC" FAILED_TEMP "$TB"
call "$TB" GET "/app_lcm/v1/app_lcm_op_occs/$OPC"
check_eq "its error says Cancelled" Cancelled "$(body .error.title)"
check_eq "labcloud holds the app object the run let finish, no DNS record" "1 0" \
	"$(lab_items apps | jq length) $(lab_items dns | jq length)"
call "$TB" POST "/app_lcm/v1/app_lcm_op_occs/$OPC/fail"
check_eq "fail the cancelled operation: 200 FAILED" "200 FAILED" "$S $(body .operationState)"
call "$TB" POST "/app_lcm/v1/app_instances/$IC/terminate" '{"terminationType":"FORCEFUL"}' -D "$T/hdr"
check_eq "terminate it: 202" 202 "$S"
OPT=$(loc_op)
wait_for "the terminate COMPLETES" 90 op_is "$OPT" COMPLETED "$TB"
check_eq "labcloud is empty again" 0 "$(lab_total)" || lab_pairs
call "$TB" DELETE "/app_lcm/v1/app_instances/$IC"
check_eq "then the instance can be deleted: 204" 204 "$S"

say "a clean stop deregisters"
api_stop TERM
check_eq "the federator holds no system after the stop" 0 "$(curl -s "$FED_URL/_stats" | jq .systems)"

say "local package sources are for operators unless limits.localPackageSources"
api_config "$T/strict.json" '.dataDir += "-strict" | del(.federator) | del(.limits.localPackageSources)'
api_start "$T/strict.json"
for src in file:///etc/passwd "git+file://$T/pkgrepo"; do
	call "$TB" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"local\",\"appPkgVersion\":\"1\",
		\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$(printf '%064d' 0)\"},\"appPkgPath\":\"$src\"}"
	check_eq "a tenant's appPkgPath $src: 403 saying why" "403 true" \
		"$S $(body '.detail | contains("operators") and contains("localPackageSources")')"
done
call "$TB" GET /app_pkgm/v1/app_packages
check_eq "... and no package was created" 0 "$(body length)"
# A tenant's uploaded package whose plan names a module outside itself.
# bad_zip NAME SOURCE: a zip of the example AppD and a plan using SOURCE.
bad_zip() {
	mkdir -p "$T/$1"
	cp "$MO_SOURCE_DIR/examples/serve/package/appd.json" "$T/$1/"
	printf 'module("net", { source = "%s", inputs = {} })\n' "$2" >"$T/$1/plan.lua"
	(cd "$T/$1" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.write("appd.json"); z.write("plan.lua")' "$T/$1.zip")
	sha256sum "$T/$1.zip" | cut -d' ' -f1
}
for c in "abs|$MO_SOURCE_DIR/iac-modules/lab/generic|outside the package" \
	"git|git+file://$T/pkgrepo//modules/generic?ref=v1.0.0|local repository is not allowed"; do
	IFS='|' read -r name src want <<<"$c"
	sum=$(bad_zip "$name" "$src")
	call "$TB" POST /app_pkgm/v1/app_packages \
		"{\"appPkgName\":\"$name\",\"appPkgVersion\":\"1\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$sum\"}}"
	BADP=$(body .id)
	call "$TB" PUT "/app_pkgm/v1/app_packages/$BADP/package_content" "" --data-binary "@$T/$name.zip" \
		-H 'Content-Type: application/zip'
	wait_for "a tenant's package whose plan uses $name module source $src is refused (CREATED)" 120 \
		pkg_is "$BADP" CREATED "$TB"
	call "$TB" GET "/app_pkgm/v1/app_packages/$BADP"
	check_eq "... saying: $want" true "$(body ".onboardingFailureDetails.detail | contains(\"$want\")")"
done
call "$TO" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$DIGEST\"},\"appPkgPath\":\"git+file://$T/pkgrepo?ref=v1.0.0\"}"
check_eq "an operator's git+file:// source: 201" 201 "$S"
OPKG=$(body .id)
wait_for "... onboarded" 120 pkg_is "$OPKG" ONBOARDED "$TO"
call "$TO" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"passwd\",\"appPkgVersion\":\"1\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$(printf '%064d' 0)\"},\"appPkgPath\":\"file:///etc/passwd\"}"
OBAD=$(body .id)
wait_for "an operator's file:///etc/passwd with a wrong checksum fails (CREATED)" 120 pkg_is "$OBAD" CREATED "$TO"
call "$TO" GET "/app_pkgm/v1/app_packages/$OBAD"
check_eq "... without showing the file's SHA-256" "true false" \
	"$(body ".onboardingFailureDetails.detail | \"\\(contains(\"checksum mismatch\")) \\(contains(\"$PASSWD_SUM\"))\"")"

say "appPkgPath http:// of a zip: open to tenants (not a local source), checksum verified"
# The HTTP server holds each zip's response while a .hold file is there, so
# the fetches are seen in progress (UPLOADING) and keep both workers busy.
www_start "$T/www"
cp "$T/pkg.zip" "$T/www/edge-echo.zip"
cp "$T/abs.zip" "$T/www/other.zip" # another zip, claimed with edge-echo.zip's checksum
OTHER_SUM=$(sha256sum "$T/www/other.zip" | cut -d' ' -f1)
touch "$T/www/edge-echo.zip.hold" "$T/www/other.zip.hold"
call "$TB" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"},\"appPkgPath\":\"$WWW_URL/edge-echo.zip\"}"
check_eq "a tenant's http:// appPkgPath while limits.localPackageSources is off: 201 UPLOADING" "201 UPLOADING" \
	"$S $(body .onboardingState)"
HPKG=$(body .id)
pkg_track "$HPKG" "$TB" "$T/track.http"
call "$TB" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"other\",\"appPkgVersion\":\"1.0.0\",
	\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"},\"appPkgPath\":\"$WWW_URL/other.zip\"}"
check_eq "another one, whose zip does not match the checksum given: 201" 201 "$S"
HBAD=$(body .id)
www_asked() { grep -qx "/$1" "$T/www.requests"; }
wait_for "the server is fetching edge-echo.zip" 90 www_asked edge-echo.zip
wait_for "the server is fetching other.zip" 90 www_asked other.zip
check_eq "both packages are UPLOADING while their fetches are held" "UPLOADING UPLOADING" \
	"$(pkg_state "$HPKG" "$TB") $(pkg_state "$HBAD" "$TB")"

say "onboarding states, in order: CREATED -> UPLOADING -> PROCESSING -> ONBOARDED"
# An uploaded package waits UPLOADING in the queue while both workers are in
# the held fetches above; its plan's module comes from a git:// server that
# holds the connection, so PROCESSING lasts until it is let go.  A tracker
# records every state GET shows; each is held until the tracker has seen it.
gitd_start "$T/git"
git clone -q --bare "$T/pkgrepo" "$T/git/generic.git"
touch "$T/git/generic.git.hold"
mkdir -p "$T/gitpkg"
jq '.appDId = "edge-echo-git-1.0.0" | .appName = "edge-echo-git"' \
	"$MO_SOURCE_DIR/examples/serve/package/appd.json" >"$T/gitpkg/appd.json"
sed "s|^local generic = .*|local generic = \"$GITD_URL/generic.git//modules/generic?ref=v1.0.0\"|" \
	"$MO_SOURCE_DIR/examples/serve/package/plan.lua" >"$T/gitpkg/plan.lua"
check_true "the plan takes its module from the git:// server" grep -q "$GITD_URL/generic.git" "$T/gitpkg/plan.lua"
(cd "$T/gitpkg" && python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.write("appd.json"); z.write("plan.lua")' "$T/gitpkg.zip")
GSUM=$(sha256sum "$T/gitpkg.zip" | cut -d' ' -f1)
call "$TB" POST /app_pkgm/v1/app_packages \
	"{\"appPkgName\":\"edge-echo-git\",\"appPkgVersion\":\"1.0.0\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$GSUM\"}}"
check_eq "POST without appPkgPath: 201 CREATED" "201 CREATED" "$S $(body .onboardingState)"
GPKG=$(body .id)
pkg_track "$GPKG" "$TB" "$T/track.upload"
seen() { grep -qx "$2" "$1"; }
wait_for "the tracker sees CREATED" 60 seen "$T/track.upload" CREATED
call "$TB" PUT "/app_pkgm/v1/app_packages/$GPKG/package_content" "" --data-binary "@$T/gitpkg.zip" \
	-H 'Content-Type: application/zip'
check_eq "PUT package_content: 202" 202 "$S"
check_eq "with both workers busy, the package waits UPLOADING" UPLOADING "$(pkg_state "$GPKG" "$TB")"
wait_for "the tracker sees UPLOADING" 60 seen "$T/track.upload" UPLOADING
wait_for "... and the http:// package's tracker too" 60 seen "$T/track.http" UPLOADING
rm -f "$T/www/edge-echo.zip.hold" "$T/www/other.zip.hold"
wait_for "the http:// package reaches ONBOARDED" 120 pkg_is "$HPKG" ONBOARDED "$TB"
call "$TB" GET "/app_pkgm/v1/app_packages/$HPKG"
check_eq "... ENABLED, its AppD read from the fetched zip" "ENABLED edge-echo-1.0.0" \
	"$(body '"\(.operationalState) \(.appDId)"')"
wait_for "the zip that does not match its checksum: back to CREATED" 120 pkg_is "$HBAD" CREATED "$TB"
call "$TB" GET "/app_pkgm/v1/app_packages/$HBAD"
check_eq "... DISABLED, the failure saying checksum mismatch, not the SHA-256 fetched" "DISABLED true false" \
	"$(body "\"\\(.operationalState) \\(.onboardingFailureDetails.detail | contains(\"checksum mismatch\")) \\(.onboardingFailureDetails.detail | contains(\"$OTHER_SUM\"))\"")"
http_states_ok() {
	case $(tracked "$T/track.http") in
	"UPLOADING ONBOARDED" | "UPLOADING PROCESSING ONBOARDED") return 0 ;;
	esac
	return 1
}
wait_for "the http:// package went UPLOADING, (PROCESSING,) ONBOARDED, never back" 60 http_states_ok
wait_for "the upload is PROCESSING while its module's git:// fetch is held" 120 pkg_is "$GPKG" PROCESSING "$TB"
wait_for "the tracker sees PROCESSING" 60 seen "$T/track.upload" PROCESSING
check_true "the module's fetch reached the git:// server" grep -q ' /generic.git$' "$T/gitd.requests"
rm -f "$T/git/generic.git.hold"
wait_for "the upload reaches ONBOARDED" 120 pkg_is "$GPKG" ONBOARDED "$TB"
wait_for "the tracker sees ONBOARDED" 60 seen "$T/track.upload" ONBOARDED
check_eq "the states it went through, in order" "CREATED UPLOADING PROCESSING ONBOARDED" "$(tracked "$T/track.upload")"

say "symbolic links in a git package name nothing outside it"
# linkrepo: 'pkg' is a link to a directory of this machine, and in 'app'
# plan.lua links to a file of it.  Even an operator's package keeps regular
# files only, so onboarding fails and the linked files are untouched.
mkdir -p "$T/victim" "$T/linkrepo/app"
echo precious >"$T/victim/data.txt"
echo 'print("outside")' >"$T/victim/plan.lua"
cp "$MO_SOURCE_DIR/examples/serve/package/appd.json" "$T/linkrepo/app/"
ln -s "$T/victim" "$T/linkrepo/pkg"
ln -s "$T/victim/plan.lua" "$T/linkrepo/app/plan.lua"
(cd "$T/linkrepo" && git init -q && git add -A && git -c user.name=t -c user.email=t@t commit -qm links)
# the tree digest of app/ once the link is gone: appd.json alone (docs/api.md)
APP_SUM=$(printf '%s  appd.json\n' "$(sha256sum <"$T/linkrepo/app/appd.json" | cut -d' ' -f1)" |
	sha256sum | cut -d' ' -f1)
for c in "pkg|no directory 'pkg'|$(printf '%064d' 0)" "app|plan.lua|$APP_SUM"; do
	IFS='|' read -r sub want sum <<<"$c"
	call "$TO" POST /app_pkgm/v1/app_packages "{\"appPkgName\":\"link-$sub\",\"appPkgVersion\":\"1\",
		\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$sum\"},\"appPkgPath\":\"git+file://$T/linkrepo//$sub\"}"
	LPKG=$(body .id)
	wait_for "a package whose //$sub is (or holds) a link fails onboarding (CREATED)" 120 pkg_is "$LPKG" CREATED "$TO"
	call "$TO" GET "/app_pkgm/v1/app_packages/$LPKG"
	check_eq "... the failure names $want" true "$(body ".onboardingFailureDetails.detail | contains(\"$want\")")"
done
check_eq "the linked directory and its files are untouched" "precious" "$(cat "$T/victim/data.txt" 2>&1)"
check_true "... the linked plan.lua too" test -f "$T/victim/plan.lua"
api_stop TERM

say "MEC 040 registration is retried until the federator comes up"
# federator.url names a free port below the ephemeral range, where nothing
# listens until the federator is started there (another try, with another
# port, in the unlikely case something took it meanwhile).
fed_down() {
	[ "$(curl -s -H "Authorization: Bearer $TO" "$API/mecorch/v1/federation/system" |
		jq -r '.registered == false and (.lastError // "") != ""')" = true ]
}
LATE_UP=0
LATE_SYS='{}'
LATE_HEALTH=
for _ in 1 2 3; do
	FPORT=$(it_free_port) || break
	rm -rf "$T/data-late"
	api_config "$T/late.json" ".dataDir += \"-late\" | .system.systemName = \"mecorch-late\" |
		.federator.url = \"http://127.0.0.1:$FPORT/fed_enablement/v1\""
	api_start "$T/late.json"
	poll_until 60 fed_down
	LATE_SYS=$(curl -s -H "Authorization: Bearer $TO" "$API/mecorch/v1/federation/system")
	LATE_HEALTH=$(curl -s "$API/health" | jq -c .federation)
	if fed_start "$FPORT"; then
		LATE_UP=1
		break
	fi
	api_stop TERM
done
check_eq "while nothing listens at federator.url: not registered, lastError says why" "false true" \
	"$(echo "$LATE_SYS" | jq -r '"\(.registered) \((.lastError // "") != "")"')"
check_eq "/health: federation configured, not registered" '{"configured":true,"registered":false}' "$LATE_HEALTH"
check_eq "the federator starts on the port of federator.url, after the server" 1 "$LATE_UP"
wait_for "the server registers without a restart once the federator listens" 120 fed_systems_is 1
LATE_ID=$(curl -s -H 'Authorization: Bearer federator-secret' \
	"$FED_URL/fed_enablement/v1/fed_resources/system_info?systemname=mecorch-late" | jq -r '.[0].systemId')
late_registered() {
	[ "$(curl -s -H "Authorization: Bearer $TO" "$API/mecorch/v1/federation/system" |
		jq -r '"\(.registered) \(.systemId)"')" = "true $LATE_ID" ]
}
wait_for "federation/system: registered, with the systemId the federator assigned" 60 late_registered
check_eq "/metrics: mecorch_federation_registered 1" 1 "$(metric mecorch_federation_registered)"
api_stop TERM
check_eq "its clean stop deregisters it" 0 "$(curl -s "$FED_URL/_stats" | jq .systems)"

finish
