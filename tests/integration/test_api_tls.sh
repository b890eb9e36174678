#!/usr/bin/env bash
# test_api_tls.sh - `mecorch serve` over TLS (GnuTLS), with and without
# client certificates.  A throwaway PKI is made here with the openssl CLI: a
# CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost), client
# certificates signed by the CA (one whose CN is mapped to tenant a, one for
# a gateway mapped to nobody, one without a CN), a self-signed client
# certificate that claims tenant a's CN, and a second CA nobody trusts.
#
# Four servers, one after the other, on the same data directory:
#   0. plain http: a subscription is made (its links say http://);
#   1. TLS only: https with the CA works (health, tokens, Location headers,
#      the old subscription's links now https://, an upload and a ranged
#      download of a package), plain http and clients that do not trust the
#      CA or whose name is not in the certificate fail, the MEC 040
#      registration with the (plain http) federator works, SIGTERM with idle
#      connections open (a stalled handshake, an established TLS session)
#      exits 0 and deregisters;
#   2. tls.clientCaFile: a certificate is optional, a verified one whose CN
#      is mapped authenticates without a token, a self-signed one does not;
#   3. tls.requireClientCert: requests without a verified certificate get 401
#      (the handshake itself succeeds: no TLS alert), except /health and
#      /openapi.yaml; the CA's server certificate is no client certificate;
#      the bearer token still decides the tenant; registration and a clean
#      stop as before.
# Then configurations the server must refuse (a key that does not match the
# certificate, one clientCertCN on two entries).  Needs the openssl CLI.
IT_HERE=$(cd "$(dirname "$0")" && pwd)
source "$IT_HERE/lib.sh"
source "$IT_HERE/lib_api.sh"

if ! command -v openssl >/dev/null; then
	echo "test_api_tls.sh needs the openssl command-line tool" >&2
	exit 1
fi

# The zones' domain inputs: nothing is instantiated here, so no labcloud.
LAB_URL=http://127.0.0.1:9

# ---- the throwaway PKI -----------------------------------------------------------

PKI=$T/pki
CA=$PKI/ca.crt
mkdir -p "$PKI"
cat >"$PKI/x509.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[selfsigned]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
EOF

# pki_key NAME: a P-256 key NAME.key.
pki_key() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>>"$PKI/log"
}

# pki_ca NAME SUBJECT: a self-signed CA NAME.crt.
pki_ca() {
	pki_key "$1" && openssl req -new -x509 -config "$PKI/x509.cnf" -extensions ca -key "$PKI/$1.key" \
		-subj "$2" -days 2 -out "$PKI/$1.crt" 2>>"$PKI/log"
}

# pki_cert NAME SUBJECT EXTENSIONS [ISSUER]: NAME.crt issued by ISSUER (a CA
# made by pki_ca), or self-signed when ISSUER is "self".
pki_cert() {
	local issuer=${4:-ca}
	pki_key "$1" &&
		openssl req -new -config "$PKI/x509.cnf" -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" \
			2>>"$PKI/log" || return 1
	if [ "$issuer" = self ]; then
		openssl x509 -req -in "$PKI/$1.csr" -key "$PKI/$1.key" -days 2 \
			-extfile "$PKI/x509.cnf" -extensions "$3" -out "$PKI/$1.crt" 2>>"$PKI/log"
	else
		openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$issuer.crt" -CAkey "$PKI/$issuer.key" \
			-set_serial "0x$(openssl rand -hex 8)" -days 2 \
			-extfile "$PKI/x509.cnf" -extensions "$3" -out "$PKI/$1.crt" 2>>"$PKI/log"
	fi
}

say "a throwaway PKI (openssl)"
pki_ca ca "/CN=mecorch test CA" &&
	pki_ca otherca "/CN=some other CA" &&
	pki_cert server "/CN=localhost" server &&
	pki_cert client-a "/CN=mef-a" client &&
	pki_cert gateway "/CN=gateway" client &&
	pki_cert nocn "/O=lab gateway" client &&
	pki_cert selfsigned "/CN=mef-a" selfsigned self
check_true "CA, server and client certificates made" test -s "$PKI/selfsigned.crt"
check_true "the CA-signed certificates verify with openssl, the self-signed one does not" \
	sh -c "openssl verify -CAfile '$CA' '$PKI/server.crt' '$PKI/client-a.crt' '$PKI/gateway.crt' '$PKI/nocn.crt' >/dev/null 2>&1 &&
		! openssl verify -CAfile '$CA' '$PKI/selfsigned.crt' >/dev/null 2>&1"
if [ "$FAILED" -gt 0 ]; then
	cat "$PKI/log"
	finish
fi

# ---- helpers ------------------------------------------------------------------------

# tls_config FILE [jq]: the api_config of lib_api.sh with the server
# certificate, then jq applied.
tls_config() {
	api_config "$1.tmp"
	jq --arg cert "$PKI/server.crt" --arg key "$PKI/server.key" \
		'.tls = {certFile: $cert, keyFile: $key} | '"${2:-.}" "$1.tmp" >"$1"
	rm -f "$1.tmp"
}

# tls_start CONFIG: start the server (api_start) and check it says https;
# PORT, API (https://127.0.0.1:PORT).  The server writes its port file
# before it prints that line: wait (bounded) for the line.
tls_start() {
	local before
	before=$(cat "$T/serve.log" 2>/dev/null | wc -l)
	api_start "$1"
	PORT=${API##*:}
	API=https://127.0.0.1:$PORT
	poll_until 60 _said_listening "$((${before:-0} + 1))"
	check_true "the server listens on $API" _said_listening "$((${before:-0} + 1))"
}
# _said_listening LINE: serve.log from LINE on says it listens on $API.
_said_listening() {
	grep -qF "listening on $API " <(tail -n "+$1" "$T/serve.log")
}

# req TOKEN CERT METHOD PATH [BODY] [curl args...]: one request over TLS that
# trusts the test CA, with the client certificate $PKI/CERT.{crt,key} (none
# when CERT is ""); S = status (000 when there was no HTTP answer), CE =
# curl's exit status, body in $T/body.
req() {
	local tok=$1 cert=$2 method=$3 path=$4 data=${5-}
	shift 4
	[ $# -gt 0 ] && shift
	local args=(-s -o "$T/body" -w '%{http_code}' -X "$method" --max-time 10 --cacert "$CA")
	[ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
	[ -n "$cert" ] && args+=(--cert "$PKI/$cert.crt" --key "$PKI/$cert.key")
	[ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data-binary "$data")
	: >"$T/body"
	S=$(curl "${args[@]}" "$@" "$API$path")
	CE=$?
}

fed_systems() { curl -s --max-time 5 "$FED_URL/_stats" | jq .systems; }
health_registered() {
	[ "$(curl -s --max-time 5 --cacert "$CA" "$API/health" | jq -r .federation.registered)" = true ]
}
pkg_tls_is() {
	req "$TB" "${3-}" GET "/app_pkgm/v1/app_packages/$1"
	[ "$(body .onboardingState)" = "$2" ]
}

# forget_pid PID: take a server that was waited for out of IT_PIDS, so the
# cleanup never signals a recycled pid.
forget_pid() {
	local p keep=()
	for p in "${IT_PIDS[@]}"; do
		[ "$p" = "$1" ] || keep+=("$p")
	done
	IT_PIDS=("${keep[@]}")
}

# stop_server DESC: SIGTERM, then wait (at most 60 s) for the exit status.
stop_server() {
	local i rc
	kill -TERM "$API_PID" 2>/dev/null
	for i in $(seq 1 600); do
		kill -0 "$API_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$API_PID" 2>/dev/null; then
		_fail "$1" "still running 60 s after SIGTERM"
		kill -KILL "$API_PID" 2>/dev/null
		wait "$API_PID" 2>/dev/null
		forget_pid "$API_PID"
		return
	fi
	wait "$API_PID"
	rc=$?
	forget_pid "$API_PID"
	check_eq "$1" 0 "$rc"
}

fed_start

# ---- 0. plain http first ---------------------------------------------------------------

say "before TLS: a subscription made over plain http"
api_config "$T/plain.json"
api_start "$T/plain.json"
call "$TA" POST /app_pkgm/v1/subscriptions \
	"{\"subscriptionType\":\"AppPackageOnBoarding\",\"callbackUri\":\"$FED_URL/notify/pkg\"}"
check_eq "tenant a subscribes over http: 201, an http:// link" "201 $API/app_pkgm/v1/subscriptions/$(body .id)" \
	"$S $(body ._links.self.href)"
SUB_A=$(body .id)
stop_server "SIGTERM: exit 0"

# ---- 1. TLS, no client certificates --------------------------------------------------

say "TLS: https with the test CA"
tls_config "$T/tls.json"
tls_start "$T/tls.json"
req "$TA" "" GET "/app_pkgm/v1/subscriptions/$SUB_A"
check_eq "the subscription made before TLS now links to https://" "200 $API/app_pkgm/v1/subscriptions/$SUB_A" \
	"$S $(body ._links.self.href)"
req "" "" GET /health
check_eq "GET /health over https (--cacert): 200, status ok" "200 ok" "$S $(body .status)"
S=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CA" \
	--resolve "localhost:$PORT:127.0.0.1" "https://localhost:$PORT/health")
check_eq "https://localhost (the certificate's DNS name) verifies too: 200" 200 "$S"
req "$TA" "" GET /app_lcm/v1/app_instances
check_eq "GET app_instances with tenant a's bearer token: 200 []" "200 []" "$S $(jq -c . "$T/body")"
req "" "" GET /app_lcm/v1/app_instances "" -D "$T/hdr"
check_eq "no token over https: 401" 401 "$S"
check_true "401 comes with WWW-Authenticate: Bearer" grep -qi '^WWW-Authenticate: Bearer' "$T/hdr"
req "$TA" "" POST /app_pkgm/v1/subscriptions \
	"{\"subscriptionType\":\"AppPackageOnBoarding\",\"callbackUri\":\"$FED_URL/notify/pkg\"}" -D "$T/hdr"
check_eq "tenant a subscribes over https: 201" 201 "$S"
SUB_A2=$(body .id)
check_true "Location is an https:// URL of this server" \
	grep -qi "^Location: $API/app_pkgm/v1/subscriptions/$SUB_A2" "$T/hdr"
check_eq "_links.self is https:// too" "$API/app_pkgm/v1/subscriptions/$SUB_A2" "$(body ._links.self.href)"

say "TLS: what must fail"
S=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$PORT/health")
CE=$?
check_true "plain http to the TLS port gets no HTTP answer (curl $CE, status $S)" \
	test "$CE" -ne 0 -a "$S" = 000
S=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$PKI/otherca.crt" "$API/health")
CE=$?
check_eq "a client trusting another CA fails verification (curl 60)" "60 000" "$CE $S"
S=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert "$CA" \
	--resolve "mecorch.invalid:$PORT:127.0.0.1" "https://mecorch.invalid:$PORT/health")
CE=$?
check_eq "a name that is not in the certificate fails verification (curl 60)" "60 000" "$CE $S"
req "" "" GET /health
check_eq "the server still answers https after those" 200 "$S"

say "TLS: a package uploaded and downloaded over https"
ZSUM=$("$MO_SOURCE_DIR/examples/serve/make-package.sh" zip "$T/pkg.zip")
req "$TB" "" POST /app_pkgm/v1/app_packages \
	"{\"appPkgName\":\"edge-echo\",\"appPkgVersion\":\"1.0.0\",\"checksum\":{\"algorithm\":\"SHA-256\",\"hash\":\"$ZSUM\"}}"
check_eq "tenant b creates a package: 201 CREATED" "201 CREATED" "$S $(body .onboardingState)"
PKG_B=$(body .id)
req "$TB" "" PUT "/app_pkgm/v1/app_packages/$PKG_B/package_content" "" \
	-H 'Content-Type: application/zip' --data-binary "@$T/pkg.zip"
check_eq "PUT package_content (application/zip) over https: 202" 202 "$S"
wait_for "the package reaches ONBOARDED" 120 pkg_tls_is "$PKG_B" ONBOARDED
req "$TB" "" GET "/app_pkgm/v1/app_packages/$PKG_B/package_content"
check_eq "GET package_content over https: 200, the uploaded bytes" "200 $ZSUM" \
	"$S $(sha256sum <"$T/body" | cut -d' ' -f1)"
req "$TB" "" GET "/app_pkgm/v1/app_packages/$PKG_B/package_content" "" -H 'Range: bytes=10-29'
check_eq "a Range over https: 206 with those 20 bytes" "206 $(tail -c +11 "$T/pkg.zip" | head -c 20 | od -An -tx1 | tr -d ' \n')" \
	"$S $(od -An -tx1 <"$T/body" | tr -d ' \n')"

say "TLS: MEC 040 registration with the federator"
wait_for "/health (over https) says the system is registered" 60 health_registered
check_eq "the federator holds one system" 1 "$(fed_systems)"
req "$TO" "" GET /mecorch/v1/federation/system
check_eq "federation/system over https: registered, our name" "true mecorch-it" \
	"$(body '"\(.registered) \(.systemName)"')"

say "TLS: SIGTERM with idle connections open"
exec {IDLE}<>"/dev/tcp/127.0.0.1/$PORT"
mkfifo "$T/sclient.in"
openssl s_client -connect "127.0.0.1:$PORT" -CAfile "$CA" -verify_return_error -servername localhost \
	<"$T/sclient.in" >"$T/sclient.out" 2>&1 &
SCLIENT=$!
_it_track "$SCLIENT"
exec {HOLD}>"$T/sclient.in"
wait_for "openssl s_client completes a verified handshake and stays connected" 60 \
	grep -q 'Verify return code: 0 (ok)' "$T/sclient.out"
stop_server "SIGTERM with a stalled handshake and an idle TLS session open: exit 0"
wait_for "the idle TLS client sees its connection closed" 60 sh -c "! kill -0 $SCLIENT 2>/dev/null"
exec {HOLD}>&- {IDLE}>&-
wait "$SCLIENT" 2>/dev/null
forget_pid "$SCLIENT"
check_eq "the clean stop deregistered from the federator" 0 "$(fed_systems)"

# ---- 2. optional client certificates ---------------------------------------------------

say "client certificates accepted (tls.clientCaFile), not required"
tls_config "$T/tls-ca.json" '.tls.clientCaFile = "'"$CA"'" | .tokens[0].clientCertCN = "mef-a"'
tls_start "$T/tls-ca.json"
req "$TA" "" GET /app_pkgm/v1/subscriptions
check_eq "no client certificate, tenant a's token: 200" 200 "$S"
req "" client-a GET /app_pkgm/v1/subscriptions
check_eq "the CA-signed certificate of CN mef-a alone authenticates as tenant a" \
	"200 $(printf '%s\n' "$API/app_pkgm/v1/subscriptions/"{"$SUB_A","$SUB_A2"} | LC_ALL=C sort | tr '\n' ' ')" \
	"$S $(body '._links.subscriptions[].href' | LC_ALL=C sort | tr '\n' ' ')"
req "" selfsigned GET /app_pkgm/v1/subscriptions
check_eq "a self-signed certificate claiming CN mef-a authenticates nobody: 401" 401 "$S"
stop_server "SIGTERM: exit 0"

# ---- 3. required client certificates ----------------------------------------------------

say "client certificates required (tls.requireClientCert)"
tls_config "$T/tls-mtls.json" '.tls.clientCaFile = "'"$CA"'" | .tls.requireClientCert = true |
	.tokens[0].clientCertCN = "mef-a"'
tls_start "$T/tls-mtls.json"
req "" "" GET /health
check_eq "/health needs no client certificate: 200" 200 "$S"
req "" "" GET /openapi.yaml
check_eq "/openapi.yaml needs no client certificate: 200" 200 "$S"
req "$TA" "" GET /app_lcm/v1/app_instances "" -D "$T/hdr"
check_eq "no client certificate, valid token: the handshake succeeds, the answer is 401" "0 401" "$CE $S"
check_eq "a problem+json saying a client certificate is required" "401 a client certificate is required" \
	"$(body '"\(.status) \(.detail)"')"
check_true "... as application/problem+json" grep -qi '^Content-Type: application/problem+json' "$T/hdr"
req "" "" GET /metrics
check_eq "/metrics needs a client certificate too (even with metricsPublic): 401" 401 "$S"
req "$TA" client-a GET /app_lcm/v1/app_instances
check_eq "the CA-signed client certificate with tenant a's token: 200" "200 []" "$S $(jq -c . "$T/body")"
req "" client-a GET /app_pkgm/v1/subscriptions
check_eq "the CA-signed certificate of CN mef-a alone: tenant a's subscriptions" \
	"200 $(printf '%s\n' "$API/app_pkgm/v1/subscriptions/"{"$SUB_A","$SUB_A2"} | LC_ALL=C sort | tr '\n' ' ')" \
	"$S $(body '._links.subscriptions[].href' | LC_ALL=C sort | tr '\n' ' ')"
req "$TA" selfsigned GET /app_lcm/v1/app_instances
check_eq "the self-signed client certificate, even with a valid token: 401" 401 "$S"
check_true "... saying the certificate was refused" grep -q 'client certificate was refused' <(body .detail)
req "" selfsigned GET /app_pkgm/v1/subscriptions
check_eq "the self-signed certificate claiming CN mef-a alone: 401" 401 "$S"
req "$TB" server GET /app_pkgm/v1/app_packages
check_eq "the CA's server certificate (serverAuth only) is not a client certificate: 401" 401 "$S"

say "the bearer token still scopes the tenant"
req "$TB" gateway GET /app_pkgm/v1/app_packages
check_eq "gateway certificate (CN mapped to nobody) + tenant b's token: tenant b's package only" \
	"200 $PKG_B" "$S $(body '[.[].id] | join(" ")')"
req "$TB" gateway GET /app_pkgm/v1/subscriptions
check_eq "... and none of tenant a's subscriptions" "200 0" "$S $(body '._links.subscriptions | length')"
req "$TA" gateway GET /app_pkgm/v1/app_packages
check_eq "gateway certificate + tenant a's token: none of tenant b's packages" "200 0" "$S $(body length)"
req "$TA" gateway GET "/app_pkgm/v1/app_packages/$PKG_B"
check_eq "... tenant b's package is 404 to tenant a" 404 "$S"
req "$TB" nocn GET /app_pkgm/v1/app_packages
check_eq "a CA-signed certificate without a CN + tenant b's token: 200, tenant b's package" \
	"200 $PKG_B" "$S $(body '[.[].id] | join(" ")')"
req "$TB" client-a GET /app_pkgm/v1/app_packages
check_eq "tenant a's certificate with tenant b's token: 403" 403 "$S"
req "" gateway GET /app_pkgm/v1/app_packages "" -D "$T/hdr"
check_eq "a verified certificate mapped to nobody, no token: 401" 401 "$S"
check_true "... with WWW-Authenticate: Bearer" grep -qi '^WWW-Authenticate: Bearer' "$T/hdr"
req "$TA" gateway GET /mecorch/v1/deployments
check_eq "the role still comes from the token (tenant a on operator endpoints): 403" 403 "$S"
req "$TO" gateway GET /mecorch/v1/deployments
check_eq "the operator's token with a certificate: 200" 200 "$S"

say "client certificates required: registration and a clean stop"
wait_for "/health says the system is registered again" 60 health_registered
check_eq "the federator holds one system" 1 "$(fed_systems)"
stop_server "SIGTERM: exit 0"
check_eq "the clean stop deregistered" 0 "$(fed_systems)"

# ---- 4. configurations the server refuses ---------------------------------------------------

say "TLS configurations that are refused"
tls_config "$T/badkey.json" '.dataDir = "'"$T/data-bad"'" | .tls.keyFile = "'"$PKI/gateway.key"'" | del(.federator)'
timeout 120 "$MECORCH" serve --config "$T/badkey.json" --port-file "$T/bad.port" >"$OUT" 2>"$ERR"
RC=$?
check_eq "a key that does not match the certificate: exit 1" 1 "$RC"
check_out_has "... saying the certificate and key were refused" "TLS certificate and key were refused"
tls_config "$T/dupcn.json" '.dataDir = "'"$T/data-bad"'" | del(.federator) | .tls.clientCaFile = "'"$CA"'" |
	.tokens[0].clientCertCN = "mef-a" | .tokens[1].clientCertCN = "mef-a"'
timeout 120 "$MECORCH" serve --config "$T/dupcn.json" --port-file "$T/bad.port" >"$OUT" 2>"$ERR"
RC=$?
check_eq "one clientCertCN on two token entries: exit 2" 2 "$RC"
check_out_has "... naming the key" "tokens[1]: clientCertCN: two entries have the same clientCertCN"

finish
