#!/usr/bin/env bash
# test_azure.sh - the public-cloud/azure-blob module against azurite, which
# verifies every SharedKey signature the module computes.
#
# Create, plan empty after apply, drift made behind mecorch's back (signed
# requests straight to azurite from this script) detected and repaired,
# update in place, replace, a wrong account key refused with a clear error,
# azurite stopped in the middle of an apply and restarted (the next apply
# recovers: state == azurite), and destroy (azurite empty).  mecorch talks
# to azurite through a plain forwarding proxy (sigv4-verifier.js
# --no-verify) whose delay widens the window in which azurite is stopped.
#
# Needs scripts/install-npm-lab (without it: skipped, exit 77).  Run by ctest
# with MECORCH and MO_SOURCE_DIR set.

. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib_cloud.sh"
# Without the npm lab the test cannot run here: skipped (exit 77, which
# ctest reports as not run), with cloud_require's reason.
if ! (cloud_require) 2>"$T/require.log"; then
	echo "skipped: $(tail -n 1 "$T/require.log")"
	echo
	echo "0 passed, 0 failed, skipped"
	exit 77
fi

PLAN=$FIXTURES/public-cloud/azure-blob.lua
ACCOUNT=devstoreaccount1
# azurite's well-known development account key
ACCOUNT_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

start_azurite "" "$T/azdata"
AZ_PORT=$AZURITE_PORT
start_proxy az-proxy "$AZ_PORT" --no-verify
AZP_PORT=$PROXY_PORT
AZ_DIRECT=http://127.0.0.1:$AZ_PORT
ENDPOINT=http://127.0.0.1:$AZP_PORT/$ACCOUNT
say "azurite $AZ_DIRECT, mecorch's endpoint $ENDPOINT"

az() {
	local vf=$1 cmd=$2
	shift 2
	local extra=()
	case $cmd in apply | destroy) extra=(--auto-approve) ;; esac
	mo "$cmd" "$PLAN" --state "$T/az.db" --var endpoint="$ENDPOINT" --var account_key="$ACCOUNT_KEY" \
		--var-file "$vf" "${extra[@]}" "$@"
}

# az_req VERB PATH QUERY CONTENT_TYPE BODY_FILE [x-ms-name:value...]: a
# SharedKey-signed request straight to azurite (path-style: /account/PATH).
# QUERY is "k=v&k=v" with plain values; prints the response body.
az_req() {
	local verb=$1 path=$2 query=$3 ctype=$4 body=$5 len= date h sig
	shift 5
	local hdrs=() data=()
	date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
	if [ -n "$body" ]; then
		data=(--data-binary "@$body")
		len=$(stat -c %s "$body")
		[ "$len" = 0 ] && len=
	elif [ "$verb" = PUT ]; then
		hdrs+=(-H "Content-Length: 0")
	fi
	[ -n "$ctype" ] && hdrs+=(-H "Content-Type: $ctype")
	for h in "$@" "x-ms-date:$date" "x-ms-version:2021-08-06"; do
		hdrs+=(-H "${h%%:*}: ${h#*:}")
	done
	sig=$(node -e '
const crypto = require("crypto");
const [verb, length, ctype, resource, query, key, ...ms] = process.argv.slice(1);
const hdrs = ms.map((h) => [h.slice(0, h.indexOf(":")).toLowerCase(), h.slice(h.indexOf(":") + 1)])
	.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
let sts = [verb, "", "", length, "", ctype, "", "", "", "", "", ""].join("\n") + "\n";
sts += hdrs.map(([k, v]) => `${k}:${v}\n`).join("") + resource;
for (const [k, v] of query.split("&").filter(Boolean).map((q) => q.split("=")).sort()) sts += `\n${k.toLowerCase()}:${v}`;
console.log(crypto.createHmac("sha256", Buffer.from(key, "base64")).update(sts).digest("base64"));
' "$verb" "$len" "$ctype" "/$ACCOUNT/$ACCOUNT$path" "$query" "$ACCOUNT_KEY" \
		"$@" "x-ms-date:$date" "x-ms-version:2021-08-06")
	local how=(-X "$verb")
	[ "$verb" = HEAD ] && how=(-I) # print the response headers
	curl -sS --max-time 10 "${how[@]}" "${hdrs[@]}" -H "Authorization: SharedKey $ACCOUNT:$sig" \
		"${data[@]}" "$AZ_DIRECT/$ACCOUNT$path${query:+?$query}"
}

az_containers() {
	az_req GET "" "comp=list" "" "" | grep -o '<Name>[^<]*</Name>' | sed 's/<[^>]*>//g' | LC_ALL=C sort
}
# Every blob as container/name, sorted.
az_blobs() {
	local c
	for c in $(az_containers); do
		az_req GET "/$c" "restype=container&comp=list" "" "" |
			grep -o '<Blob><Name>[^<]*</Name>' | sed "s/<[^>]*>//g; s|^|$c/|"
	done | LC_ALL=C sort
}
az_get() {
	az_req GET "$1" "" "" ""
}
# The response headers of a HEAD (lower-case names).
az_head() {
	az_req HEAD "$1" "$2" "" "" | tr -d '\r' | tr 'A-Z' 'a-z'
}

# ---- create -------------------------------------------------------------------

say "create"
cat >"$T/v1.json" <<'EOF'
{"containers": {"site": {"name": "lab-site", "metadata": {"env": "lab", "Owner": "ops"}},
                "logs": {"name": "lab-logs"}, "spare": {"name": "lab-spare"}},
 "blobs": {
   "index": {"container": "site", "name": "www/index page.html", "content": "<h1>hello azure</h1>\n",
             "content_type": "text/html", "metadata": {"rev": "1"}},
   "bin": {"container": "logs", "name": "raw.bin", "content_base64": "AAECAwQF/w=="},
   "empty": {"container": "logs", "name": "empty"}}}
EOF
az "$T/v1.json" apply
check_rc "apply creates 3 containers and 3 blobs" 0
check_out_has "the summary counts 6 creates" "6 created"
check_eq "azurite holds the containers" "lab-logs lab-site lab-spare" "$(echo $(az_containers))"
check_eq "azurite holds the blobs" "lab-logs/empty lab-logs/raw.bin lab-site/www/index page.html" \
	"$(echo $(az_blobs))"
check_eq "the blob's content" "<h1>hello azure</h1>" "$(az_get "/lab-site/www/index%20page.html")"
check_eq "the binary blob's bytes" "000102030405ff" "$(az_get /lab-logs/raw.bin | od -An -tx1 | tr -d ' \n')"
check_true "the blob's content type" grep -q '^content-type: text/html' <(az_head "/lab-site/www/index%20page.html" "")
check_true "the blob's metadata" grep -q '^x-ms-meta-rev: 1' <(az_head "/lab-site/www/index%20page.html" "")
check_true "the container's metadata (names lower case)" grep -q '^x-ms-meta-owner: ops' \
	<(az_head /lab-site "restype=container")
az "$T/v1.json" plan --detailed-exitcode
check_rc "plan right after apply is empty" 0

# ---- drift --------------------------------------------------------------------

say "drift behind mecorch's back"
printf 'changed behind the back' >"$T/changed.txt"
az_req PUT "/lab-site/www/index%20page.html" "" "text/plain" "$T/changed.txt" "x-ms-blob-type:BlockBlob" >/dev/null
az_req PUT /lab-site "comp=metadata&restype=container" "" "" "x-ms-meta-env:prod" >/dev/null
az_req DELETE /lab-logs/raw.bin "" "" "" >/dev/null
az "$T/v1.json" plan --detailed-exitcode
check_rc "plan reports the drift" 2
check_out_has "a changed blob is drift" "module.az.blob.index: drift detected (changed)"
check_out_has "the plan shows the content going back" '~ content = "changed behind the back" -> "<h1>hello azure</h1>\n"'
check_out_has "a deleted blob is drift" "module.az.blob.bin: drift detected (gone)"
check_out_has "changed container metadata is drift" '~ metadata.env = "prod" -> "lab"'
az "$T/v1.json" apply
check_rc "apply repairs the drift" 0
check_eq "the content is back" "<h1>hello azure</h1>" "$(az_get "/lab-site/www/index%20page.html")"
check_true "the deleted blob is back" grep -q '^http/1.1 200' <(az_head /lab-logs/raw.bin "")
az "$T/v1.json" plan --detailed-exitcode
check_rc "plan after the repair is empty" 0

# ---- update and replace -------------------------------------------------------

say "update in place and replace"
cat >"$T/v2.json" <<'EOF'
{"containers": {"site": {"name": "lab-site", "metadata": {"env": "lab", "owner": "web"}},
                "logs": {"name": "lab-logs"}, "spare": {"name": "lab-spare-2"}},
 "blobs": {
   "index": {"container": "site", "name": "www/index page.html", "content": "<h1>hello azure, v2</h1>\n",
             "content_type": "text/html; charset=utf-8", "metadata": {"rev": "2"}},
   "bin": {"container": "logs", "name": "raw-2.bin", "content_base64": "AAECAwQF/w=="},
   "empty": {"container": "logs", "name": "empty"}}}
EOF
az "$T/v2.json" apply
check_rc "apply of the changes" 0
check_out_has "metadata and content in place, names replace" "0 created, 2 updated, 2 replaced, 0 destroyed"
check_eq "containers after the replace" "lab-logs lab-site lab-spare-2" "$(echo $(az_containers))"
check_eq "blobs after the replace" "lab-logs/empty lab-logs/raw-2.bin lab-site/www/index page.html" \
	"$(echo $(az_blobs))"
check_eq "the updated content" "<h1>hello azure, v2</h1>" "$(az_get "/lab-site/www/index%20page.html")"
check_true "the updated metadata" grep -q '^x-ms-meta-rev: 2' <(az_head "/lab-site/www/index%20page.html" "")
check_true "the updated container metadata" grep -q '^x-ms-meta-owner: web' <(az_head /lab-site "restype=container")
az "$T/v2.json" plan --detailed-exitcode
check_rc "plan after the update is empty" 0

say "a container renamed with the blob in it"
jq '.containers.site.name = "lab-site-2"' "$T/v2.json" >"$T/v2b.json"
az "$T/v2b.json" apply
check_rc "apply of the rename" 0
check_out_has "the container and its blob are replaced" "0 created, 0 updated, 2 replaced, 0 destroyed"
check_eq "blobs after the rename" "lab-logs/empty lab-logs/raw-2.bin lab-site-2/www/index page.html" \
	"$(echo $(az_blobs))"
check_true "the metadata came along" grep -q '^x-ms-meta-owner: web' <(az_head /lab-site-2 "restype=container")
az "$T/v2b.json" plan --detailed-exitcode
check_rc "plan after the rename is empty" 0

# ---- a wrong key --------------------------------------------------------------

say "a wrong account key"
echo '{"containers": {"denied": {"name": "lab-denied"}}}' >"$T/denied.json"
WRONG_KEY=$(head -c 64 /dev/zero | tr '\0' 'k' | base64 -w0)
mo apply "$PLAN" --state "$T/denied.db" --var endpoint="$ENDPOINT" --var account_key="$WRONG_KEY" \
	--var-file "$T/denied.json" --auto-approve
check_rc "apply with a wrong key fails" 1
check_out_has "azurite refuses the signature" "403 AuthorizationFailure"
check_out_has "the error says what to check" "check the module's account and account_key"
check_eq "the container was not created" "lab-logs lab-site-2 lab-spare-2" "$(echo $(az_containers))"
mo plan "$PLAN" --state "$T/bad-key.db" --var endpoint="$ENDPOINT" --var account_key='not base64!' \
	--var-file "$T/denied.json"
check_rc "a key that is not base64 is refused at plan time (a module error)" 7
check_out_has "the error names the key" "account_key: want the storage account key as base64 text"

# ---- azurite stopped in the middle of an apply --------------------------------

say "azurite stopped in the middle of an apply"
# SIGTERM, not SIGKILL: azurite keeps its metadata in a JSON database it
# saves when it stops; a SIGKILL loses the last seconds of it (or leaves a
# torn file that azurite refuses to start with).
jq '.containers.bulk = {"name": "lab-bulk"} |
	.blobs += ([range(1; 17)] | map({key: "bulk\(.)", value: {container: "bulk", name: "items/\(.)",
		content: "blob \(.)\n", content_type: "text/plain"}}) | from_entries)' "$T/v2b.json" >"$T/v3.json"
proxy_latency "$AZP_PORT" 300
mo_bg "$T/crash.log" apply "$PLAN" --state "$T/az.db" --var endpoint="$ENDPOINT" \
	--var account_key="$ACCOUNT_KEY" --var-file "$T/v3.json" --auto-approve \
	--parallelism 2 --retry-max 1 --retry-base-ms 50
APPLY_PID=$BG_PID
bulk_count() {
	az_req GET /lab-bulk "restype=container&comp=list" "" "" 2>/dev/null | grep -o '<Blob><Name>' | grep -c .
}
# Stop azurite as soon as the bulk is under way (the rest takes seconds at
# 300 ms a request); count what it holds once it is back, so no time passes
# between the look and the stop.
bulk_started() { [ "$(bulk_count)" -ge 4 ]; }
if poll_until 120 bulk_started; then SEEN=yes; else SEEN=no; fi
APPLYING=no
kill -0 "$APPLY_PID" 2>/dev/null && APPLYING=yes
stop_pid "$AZURITE_PID" TERM
mo_wait "$APPLY_PID"
check_eq "the bulk was under way (4 blobs written) before the stop" yes "$SEEN"
check_eq "the apply was still running when azurite was stopped" yes "$APPLYING"
check_eq "the interrupted apply fails" 1 "$BG_RC"
start_azurite "$AZ_PORT" "$T/azdata"
BEFORE=$(bulk_count)
check_true "azurite was stopped part-way: some blobs written ($BEFORE of 16)" test "$BEFORE" -ge 1
check_true "azurite was stopped part-way: not all ($BEFORE of 16)" test "$BEFORE" -lt 16
proxy_latency "$AZP_PORT" 0
az "$T/v3.json" apply
check_rc "the next apply recovers" 0
az "$T/v3.json" plan --detailed-exitcode
check_rc "plan after the recovery is empty" 0
check_eq "state == azurite (containers)" "$(state_ids "$T/az.db" container | tr '\n' ' ')" \
	"$(az_containers | tr '\n' ' ')"
check_eq "state == azurite (blobs)" "$(state_ids "$T/az.db" blob | tr '\n' ' ')" "$(az_blobs | tr '\n' ' ')"
check_eq "19 blobs" 19 "$(az_blobs | grep -c .)"
check_eq "the 16 bulk blobs, each once" "$(seq 1 16 | sed 's|^|lab-bulk/items/|' | LC_ALL=C sort)" \
	"$(az_blobs | grep '^lab-bulk/')"
check_eq "no blob twice in the state" "" "$(state_ids "$T/az.db" blob | uniq -d)"
check_eq "a recovered blob's content" "blob 16" "$(az_get /lab-bulk/items/16)"

# ---- destroy --------------------------------------------------------------------

say "destroy"
az "$T/v3.json" destroy
check_rc "destroy" 0
check_eq "azurite holds no container" "" "$(az_containers)"

finish
