#!/usr/bin/env bash
# test_aws.sh - the public-cloud/aws-s3 and public-cloud/aws-dynamodb modules
# against s3rver and dynalite, each behind the SigV4 verifier
# (examples/lab/sigv4-verifier.js), which checks every request mecorch signs
# before forwarding it.
#
# For each module: create, plan empty after apply, drift made behind
# mecorch's back (talking to the emulator directly, bypassing the verifier)
# detected and repaired, update in place, replace, a wrong secret_key
# refused with a clear error, the emulator killed (SIGKILL) in the middle of
# an apply and restarted (the next apply recovers: state == emulator), and
# destroy (emulator empty).  For S3 also an object copied from a URL
# (source_url, a build served on loopback): bytes, drift, a new build, a
# SHA-256 mismatch.  At the end the verifier must have rejected
# exactly the deliberately mis-signed requests and nothing mecorch sent
# otherwise.
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

S3_PLAN=$FIXTURES/public-cloud/aws-s3.lua
DDB_PLAN=$FIXTURES/public-cloud/aws-dynamodb.lua
S3_KEY=S3RVER              # s3rver accepts this access key id only
S3_SECRET=lab-s3-secret    # s3rver ignores the secret; the verifier checks it
DDB_KEY=AKIDLAB
DDB_SECRET=lab-ddb-secret

# ---- the lab -----------------------------------------------------------------

start_s3rver "" "$T/s3data"
S3_PORT=$S3RVER_PORT
start_proxy s3-verifier "$S3_PORT" --credentials "$S3_KEY:$S3_SECRET"
S3V_PORT=$PROXY_PORT
S3_DIRECT=http://127.0.0.1:$S3_PORT
S3_ENDPOINT=http://127.0.0.1:$S3V_PORT

start_dynalite "" "$T/ddbdata"
DDB_PORT=$DYNALITE_PORT
start_proxy ddb-verifier "$DDB_PORT" --credentials "$DDB_KEY:$DDB_SECRET"
DDBV_PORT=$PROXY_PORT
DDB_DIRECT=http://127.0.0.1:$DDB_PORT
DDB_ENDPOINT=http://127.0.0.1:$DDBV_PORT
say "s3rver $S3_DIRECT behind $S3_ENDPOINT; dynalite $DDB_DIRECT behind $DDB_ENDPOINT"

# s3 VARFILE CMD [options]: mecorch CMD on the S3 plan and state.
s3() {
	local vf=$1 cmd=$2
	shift 2
	local extra=()
	case $cmd in apply | destroy) extra=(--auto-approve) ;; esac
	mo "$cmd" "$S3_PLAN" --state "$T/s3.db" --var endpoint="$S3_ENDPOINT" \
		--var access_key="$S3_KEY" --var secret_key="$S3_SECRET" --var-file "$vf" \
		"${extra[@]}" "$@"
}

ddb() {
	local vf=$1 cmd=$2
	shift 2
	local extra=()
	case $cmd in apply | destroy) extra=(--auto-approve) ;; esac
	mo "$cmd" "$DDB_PLAN" --state "$T/ddb.db" --var endpoint="$DDB_ENDPOINT" \
		--var access_key="$DDB_KEY" --var secret_key="$DDB_SECRET" --var-file "$vf" \
		"${extra[@]}" "$@"
}

# Requests straight to the emulators, bypassing the verifier (their own
# signature checks are absent, so any signature does).
s3_direct() {
	curl -sS --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_KEY:direct" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
s3_buckets() {
	s3_direct "$S3_DIRECT/" | grep -o '<Name>[^<]*</Name>' | sed 's/<[^>]*>//g' | LC_ALL=C sort
}
# Every object as bucket/key, sorted.
s3_objects() {
	local b
	for b in $(s3_buckets); do
		s3_direct "$S3_DIRECT/$b?list-type=2" | grep -o '<Key>[^<]*</Key>' |
			sed "s/<[^>]*>//g; s|^|$b/|"
	done | LC_ALL=C sort
}
ddb_direct() {
	curl -sS --max-time 10 -X POST "$DDB_DIRECT/" --aws-sigv4 "aws:amz:us-east-1:dynamodb" \
		--user "direct:direct" -H 'Content-Type: application/x-amz-json-1.0' \
		-H "X-Amz-Target: DynamoDB_20120810.$1" -d "$2"
}
ddb_tables() {
	ddb_direct ListTables '{}' | jq -r '.TableNames[]' | LC_ALL=C sort
}
# Every item of table $1 as table/attr=value,... (key attributes, sorted), sorted.
ddb_items() {
	ddb_direct Scan "{\"TableName\":\"$1\"}" | jq -r --arg t "$1" --argjson k "$2" '
		.Items[] | . as $i | "\($t)/" + ([$k[] | "\(.)=\($i[.] | to_entries[0].value)"] | join(","))' |
		LC_ALL=C sort
}

# ==== S3 ======================================================================

say "S3: create"
cat >"$T/s3-v1.json" <<'EOF'
{"buckets": {"alpha": {"name": "lab-alpha"}, "beta": {"name": "lab-beta"}},
 "objects": {
   "readme": {"bucket": "alpha", "key": "docs/read me.txt", "content": "hello s3\n",
              "content_type": "text/plain", "tags": {"env": "lab"}},
   "bin": {"bucket": "alpha", "key": "data/blob.bin", "content_base64": "AAECAwQF/w=="},
   "empty": {"bucket": "alpha", "key": "empty"}}}
EOF
s3 "$T/s3-v1.json" apply
check_rc "s3: apply creates 2 buckets and 3 objects" 0
check_out_has "s3: the summary counts 5 creates" "5 created"
check_eq "s3: s3rver holds the buckets" "lab-alpha lab-beta" "$(echo $(s3_buckets))"
check_eq "s3: s3rver holds the objects" \
	"lab-alpha/data/blob.bin lab-alpha/docs/read me.txt lab-alpha/empty" "$(echo $(s3_objects))"
check_eq "s3: the text object's content" "hello s3" "$(s3_direct "$S3_DIRECT/lab-alpha/docs/read%20me.txt")"
check_eq "s3: the binary object's bytes" "000102030405ff" \
	"$(s3_direct "$S3_DIRECT/lab-alpha/data/blob.bin" | od -An -tx1 | tr -d ' \n')"
check_true "s3: the object's tags are set" \
	grep -q '<Key>env</Key><Value>lab</Value>' <(s3_direct "$S3_DIRECT/lab-alpha/docs/read%20me.txt?tagging")
mo output etags --state "$T/s3.db" --json
check_eq "s3: the etag output is the content's MD5" "$(printf 'hello s3\n' | md5sum | cut -d' ' -f1)" \
	"$(jq -r '.value.readme // .readme // empty' "$OUT" | head -n 1)"

s3 "$T/s3-v1.json" plan --detailed-exitcode
check_rc "s3: plan right after apply is empty" 0

say "S3: drift behind mecorch's back"
s3_direct -X PUT "$S3_DIRECT/lab-alpha/docs/read%20me.txt" -H 'Content-Type: text/html' \
	--data-binary 'changed behind the back' >/dev/null
s3_direct -X DELETE "$S3_DIRECT/lab-alpha/data/blob.bin" >/dev/null
s3_direct -X PUT "$S3_DIRECT/lab-alpha/empty?tagging" \
	--data-binary '<Tagging><TagSet><Tag><Key>x</Key><Value>y</Value></Tag></TagSet></Tagging>' >/dev/null
s3 "$T/s3-v1.json" plan --detailed-exitcode
check_rc "s3: plan reports the drift" 2
check_out_has "s3: a changed object is drift" "module.s3.object.readme: drift detected (changed)"
check_out_has "s3: a deleted object is drift" "module.s3.object.bin: drift detected (gone)"
check_out_has "s3: changed tags are drift" "module.s3.object.empty: drift detected (changed)"
check_out_has "s3: the plan shows the content going back" '~ content = "changed behind the back" -> "hello s3\n"'
s3 "$T/s3-v1.json" apply
check_rc "s3: apply repairs the drift" 0
check_eq "s3: the content is back" "hello s3" "$(s3_direct "$S3_DIRECT/lab-alpha/docs/read%20me.txt")"
check_true "s3: the deleted object is back" s3_direct -f -o /dev/null "$S3_DIRECT/lab-alpha/data/blob.bin"
s3 "$T/s3-v1.json" plan --detailed-exitcode
check_rc "s3: plan after the repair is empty" 0

say "S3: update in place and replace"
cat >"$T/s3-v2.json" <<'EOF'
{"buckets": {"alpha": {"name": "lab-alpha"}, "beta": {"name": "lab-beta-2"}},
 "objects": {
   "readme": {"bucket": "alpha", "key": "docs/read me.txt", "content": "hello s3, version 2\n",
              "content_type": "text/markdown", "tags": {"env": "lab", "rev": "2"}},
   "bin": {"bucket": "alpha", "key": "data/blob-2.bin", "content_base64": "AAECAwQF/w=="},
   "empty": {"bucket": "alpha", "key": "empty", "tags": {"note": "tags only"}}}}
EOF
s3 "$T/s3-v2.json" apply
check_rc "s3: apply of the changes" 0
check_out_has "s3: content and tags are updated in place, key and bucket name replace" \
	"0 created, 2 updated, 2 replaced, 0 destroyed"
check_eq "s3: buckets after the replace" "lab-alpha lab-beta-2" "$(echo $(s3_buckets))"
check_eq "s3: objects after the replace" \
	"lab-alpha/data/blob-2.bin lab-alpha/docs/read me.txt lab-alpha/empty" "$(echo $(s3_objects))"
check_eq "s3: the updated content" "hello s3, version 2" "$(s3_direct "$S3_DIRECT/lab-alpha/docs/read%20me.txt")"
check_true "s3: the updated content type" grep -qi '^content-type: text/markdown' \
	<(s3_direct -I "$S3_DIRECT/lab-alpha/docs/read%20me.txt")
check_true "s3: tags-only update" grep -q '<Key>note</Key><Value>tags only</Value>' \
	<(s3_direct "$S3_DIRECT/lab-alpha/empty?tagging")
s3 "$T/s3-v2.json" plan --detailed-exitcode
check_rc "s3: plan after the update is empty" 0

say "S3: a bucket renamed with the objects in it"
jq '.buckets.alpha.name = "lab-alpha-2"' "$T/s3-v2.json" >"$T/s3-v2b.json"
s3 "$T/s3-v2b.json" apply
check_rc "s3: apply of the rename" 0
check_out_has "s3: the bucket and its three objects are replaced" "0 created, 0 updated, 4 replaced, 0 destroyed"
check_eq "s3: buckets after the rename" "lab-alpha-2 lab-beta-2" "$(echo $(s3_buckets))"
check_eq "s3: the objects moved with it" \
	"lab-alpha-2/data/blob-2.bin lab-alpha-2/docs/read me.txt lab-alpha-2/empty" "$(echo $(s3_objects))"
s3 "$T/s3-v2b.json" plan --detailed-exitcode
check_rc "s3: plan after the rename is empty" 0

say "S3: what s3rver does not implement is reported, not faked"
cat >"$T/s3-unsupported.json" <<'EOF'
{"buckets": {"ver": {"name": "lab-ver", "versioning": true}, "tag": {"name": "lab-tag", "tags": {"a": "b"}}}}
EOF
mo apply "$S3_PLAN" --state "$T/s3-unsupported.db" --var endpoint="$S3_ENDPOINT" --var access_key="$S3_KEY" \
	--var secret_key="$S3_SECRET" --var-file "$T/s3-unsupported.json" --auto-approve
check_rc "s3: versioning and bucket tags fail on s3rver" 1
check_out_has "s3: the error names versioning" "this S3 endpoint does not implement bucket versioning"
check_out_has "s3: the error names bucket tagging" "this S3 endpoint does not implement bucket tagging (501 NotImplemented"
echo '{"buckets": {"ver": {"name": "lab-ver"}, "tag": {"name": "lab-tag"}}}' >"$T/s3-defaults.json"
mo apply "$S3_PLAN" --state "$T/s3-unsupported.db" --var endpoint="$S3_ENDPOINT" --var access_key="$S3_KEY" \
	--var secret_key="$S3_SECRET" --var-file "$T/s3-defaults.json" --auto-approve
check_rc "s3: with the defaults the next apply adopts the two buckets" 0
check_out_has "s3: nothing is created twice" "0 created, 0 updated, 0 replaced"
mo destroy "$S3_PLAN" --state "$T/s3-unsupported.db" --var endpoint="$S3_ENDPOINT" --var access_key="$S3_KEY" \
	--var secret_key="$S3_SECRET" --var-file "$T/s3-defaults.json" --auto-approve
check_rc "s3: destroy of the two buckets" 0

say "S3: a wrong secret_key"
REJ0=$(proxy_stat "$S3V_PORT" .rejected)
echo '{"buckets": {"denied": {"name": "lab-denied"}}}' >"$T/s3-denied.json"
mo apply "$S3_PLAN" --state "$T/s3-denied.db" --var endpoint="$S3_ENDPOINT" --var access_key="$S3_KEY" \
	--var secret_key=not-the-secret --var-file "$T/s3-denied.json" --auto-approve
check_rc "s3: apply with a wrong secret fails" 1
check_out_has "s3: the error says the signature is wrong" "403 SignatureDoesNotMatch"
check_out_has "s3: the error says what to check" "check the module's access_key, secret_key and region"
check_eq "s3: the bucket was not created" "lab-alpha-2 lab-beta-2" "$(echo $(s3_buckets))"
S3_BAD=$(($(proxy_stat "$S3V_PORT" .rejected) - REJ0))
check_true "s3: the verifier rejected the mis-signed request" test "$S3_BAD" -ge 1

say "S3: s3rver killed in the middle of an apply"
jq '.buckets.bulk = {"name": "lab-bulk"} |
	.objects += ([range(1; 25)] | map({key: "bulk\(.)", value: {bucket: "bulk", key: "items/\(.)",
		content: "object \(.)\n"}}) | from_entries)' "$T/s3-v2b.json" >"$T/s3-v3.json"
proxy_latency "$S3V_PORT" 200
mo_bg "$T/s3-crash.log" apply "$S3_PLAN" --state "$T/s3.db" --var endpoint="$S3_ENDPOINT" \
	--var access_key="$S3_KEY" --var secret_key="$S3_SECRET" --var-file "$T/s3-v3.json" \
	--auto-approve --parallelism 2 --retry-max 1 --retry-base-ms 50
APPLY_PID=$BG_PID
# Kill s3rver as soon as the bulk is under way (the rest takes seconds at
# 200 ms a request); count what it holds once it is back (it keeps its
# objects on disk), so no time passes between the look and the kill.
bulk_started() { [ "$(s3_objects | grep -c '^lab-bulk/')" -ge 4 ]; }
if poll_until 120 bulk_started; then SEEN=yes; else SEEN=no; fi
APPLYING=no
kill -0 "$APPLY_PID" 2>/dev/null && APPLYING=yes
stop_pid "$S3RVER_PID" KILL
mo_wait "$APPLY_PID"
check_eq "s3: the bulk was under way (4 objects written) before the kill" yes "$SEEN"
check_eq "s3: the apply was still running when s3rver was killed" yes "$APPLYING"
check_eq "s3: the interrupted apply fails" 1 "$BG_RC"
start_s3rver "$S3_PORT" "$T/s3data"
BEFORE=$(s3_objects | grep -c '^lab-bulk/')
check_true "s3: s3rver was killed part-way: some objects written ($BEFORE of 24)" test "$BEFORE" -ge 1
check_true "s3: s3rver was killed part-way: not all ($BEFORE of 24)" test "$BEFORE" -lt 24
proxy_latency "$S3V_PORT" 0
s3 "$T/s3-v3.json" apply
check_rc "s3: the next apply recovers" 0
s3 "$T/s3-v3.json" plan --detailed-exitcode
check_rc "s3: plan after the recovery is empty" 0
check_eq "s3: state == s3rver (objects)" "$(state_ids "$T/s3.db" object | tr '\n' ' ')" "$(s3_objects | tr '\n' ' ')"
check_eq "s3: state == s3rver (buckets)" "$(state_ids "$T/s3.db" bucket | tr '\n' ' ')" "$(s3_buckets | tr '\n' ' ')"
check_eq "s3: 27 objects" 27 "$(s3_objects | grep -c .)"
check_eq "s3: the 24 bulk objects, each once" "$(seq 1 24 | sed 's|^|lab-bulk/items/|' | LC_ALL=C sort)" \
	"$(s3_objects | grep '^lab-bulk/')"
check_eq "s3: no object twice in the state" "" "$(state_ids "$T/s3.db" object | uniq -d)"
check_eq "s3: a recovered object's content" "object 24" "$(s3_direct "$S3_DIRECT/lab-bulk/items/24")"

say "S3: destroy"
s3 "$T/s3-v3.json" destroy
check_rc "s3: destroy" 0
check_eq "s3: s3rver holds no bucket" "" "$(s3_buckets)"

say "S3: an object copied from a URL (source_url)"
mkdir -p "$T/www"
head -c 300000 /dev/urandom >"$T/www/build-1.bin" # binary: NULs, high bytes
printf 'build 2\0\377\n' >"$T/www/build-2.bin"
cp "$T/www/build-2.bin" "$T/www/mirror-2.bin"
SRC1=$(sha256sum "$T/www/build-1.bin" | cut -d' ' -f1)
SRC2=$(sha256sum "$T/www/build-2.bin" | cut -d' ' -f1)
_launch_www() {
	python3 -m http.server "$1" --bind 127.0.0.1 --directory "$T/www" >>"$T/www.log" 2>&1 &
	_CLOUD_PID=$!
}
_cloud_serve www "" _launch_www
WWW_PORT=$_CLOUD_PORT
WWW=http://127.0.0.1:$WWW_PORT
# src_vars FILE URL SHA: a var file with one bucket and one object from URL.
src_vars() {
	jq -n --arg u "$2" --arg s "$3" '{buckets: {art: {name: "lab-art"}},
		objects: {build: {bucket: "art", key: "builds/app.bin", source_url: $u, source_sha256: $s,
		                  content_type: "application/octet-stream", tags: {stage: "ci"}}}}' >"$1"
}
src_sha() { # the SHA-256 of what s3rver holds
	s3_direct "$S3_DIRECT/lab-art/builds/app.bin" | sha256sum | cut -d' ' -f1
}
src_vars "$T/src-1.json" "$WWW/build-1.bin" "$SRC1"
s3 "$T/src-1.json" apply
check_rc "s3: apply copies the build into the bucket" 0
check_out_has "s3: the bucket and the object are created" "2 created"
check_eq "s3: the object is the build, byte for byte (300000 random bytes)" "$SRC1" "$(src_sha)"
check_true "s3: its SHA-256 is kept as object metadata" \
	grep -qi "^x-amz-meta-mecorch-sha256: $SRC1" <(s3_direct -I "$S3_DIRECT/lab-art/builds/app.bin" | tr -d '\r')
s3 "$T/src-1.json" plan --detailed-exitcode
check_rc "s3: plan after the copy is empty (read trusts the metadata while the ETag matches)" 0

s3_direct -X PUT "$S3_DIRECT/lab-art/builds/app.bin" --data-binary 'overwritten' >/dev/null
s3 "$T/src-1.json" plan --detailed-exitcode
check_rc "s3: an overwritten artefact is drift" 2
check_out_has "s3: the drift is shown as the SHA-256 of what the bucket holds" \
	"~ source_sha256 = \"$(printf overwritten | sha256sum | cut -c1-20)"
s3 "$T/src-1.json" apply
check_rc "s3: apply copies the build again" 0
check_eq "s3: the build is back" "$SRC1" "$(src_sha)"

src_vars "$T/src-2.json" "$WWW/build-2.bin" "$SRC2"
s3 "$T/src-2.json" apply
check_rc "s3: a new build (source_url and source_sha256)" 0
check_out_has "s3: is an update in place" "0 created, 1 updated, 0 replaced"
check_eq "s3: the bucket holds build 2" "$SRC2" "$(src_sha)"
src_vars "$T/src-2m.json" "$WWW/mirror-2.bin" "$SRC2"
s3 "$T/src-2m.json" apply
check_rc "s3: the same build from a mirror: only recorded" 0
check_true "s3: the builds were downloaded from the file server" grep -q 'GET /build-2.bin' "$T/www.log"
check_true "s3: nothing was downloaded from the mirror" bash -c "! grep -q 'GET /mirror-2.bin' '$T/www.log'"
s3 "$T/src-2m.json" plan --detailed-exitcode
check_rc "s3: plan after the mirror change is empty" 0

src_vars "$T/src-bad.json" "$WWW/build-2.bin" "$SRC1"
s3 "$T/src-bad.json" apply
check_rc "s3: bytes that do not match source_sha256 fail the update" 1
check_out_has "s3: the error names the URL and both hashes" \
	"bytes downloaded from $WWW/build-2.bin have SHA-256 $SRC2, not the expected source_sha256 $SRC1"
check_eq "s3: the bucket still holds build 2" "$SRC2" "$(src_sha)"
src_vars "$T/src-404.json" "$WWW/missing.bin" "$SRC1"
s3 "$T/src-404.json" apply
check_rc "s3: a source_url that answers 404 fails" 1
check_out_has "s3: the error names the URL" "GET $WWW/missing.bin: expected 200, got 404"
jq '.objects.build.content = "x"' "$T/src-2.json" >"$T/src-both.json"
s3 "$T/src-both.json" plan
check_rc "s3: content and source_url together are refused at plan time (the module's declare)" 7
check_out_has "s3: with a message" "set one of content, content_base64 and source_url"
s3 "$T/src-2.json" destroy
check_rc "s3: destroy of the copied build" 0
check_eq "s3: s3rver holds no bucket" "" "$(s3_buckets)"

say "S3: the verifier's account"
check_eq "s3: every rejected request was a deliberately mis-signed one" "$S3_BAD" "$(proxy_stat "$S3V_PORT" .rejected)"
check_eq "s3: every other request was verified" \
	"$(($(proxy_stat "$S3V_PORT" .received) - S3_BAD))" "$(proxy_stat "$S3V_PORT" .verified)"
check_true "s3: the verifier forwarded mecorch's requests ($(proxy_stat "$S3V_PORT" .forwarded))" \
	test "$(proxy_stat "$S3V_PORT" .forwarded)" -gt 100

# ==== DynamoDB ================================================================

say "DynamoDB: create"
cat >"$T/ddb-v1.json" <<'EOF'
{"tables": {
   "users": {"name": "lab-users", "hash_key": "pk", "tags": {"env": "lab"}},
   "events": {"name": "lab-events", "hash_key": {"name": "stream", "type": "S"},
              "range_key": {"name": "seq", "type": "N"},
              "billing_mode": "PROVISIONED", "read_capacity": 2, "write_capacity": 1}},
 "items": {
   "ann": {"table": "users", "key": {"pk": "u-ann"},
           "attributes": {"name": "Ann", "age": 42, "admin": true, "langs": ["c", "lua"],
                          "addr": {"city": "Oslo", "zip": "0150"}, "score": 1.5, "none": null}},
   "bob": {"table": "users", "key": {"pk": "u-bob"}},
   "ev1": {"table": "events", "format": "dynamodb", "key": {"stream": {"S": "s1"}, "seq": {"N": "1"}},
           "attributes": {"kind": {"S": "boot"}, "labels": {"SS": ["a", "b"]}}}}}
EOF
ddb "$T/ddb-v1.json" apply
check_rc "ddb: apply creates 2 tables and 3 items" 0
check_out_has "ddb: the summary counts 5 creates" "5 created"
check_eq "ddb: dynalite holds the tables" "lab-events lab-users" "$(echo $(ddb_tables))"
check_eq "ddb: the table is ACTIVE and PAY_PER_REQUEST" "ACTIVE PAY_PER_REQUEST" \
	"$(ddb_direct DescribeTable '{"TableName":"lab-users"}' | jq -r '"\(.Table.TableStatus) \(.Table.BillingModeSummary.BillingMode)"')"
check_eq "ddb: the plain map was stored as DynamoDB JSON" \
	'{"addr":{"M":{"city":{"S":"Oslo"},"zip":{"S":"0150"}}},"admin":{"BOOL":true},"age":{"N":"42"},"langs":{"L":[{"S":"c"},{"S":"lua"}]},"name":{"S":"Ann"},"none":{"NULL":true},"pk":{"S":"u-ann"},"score":{"N":"1.5"}}' \
	"$(ddb_direct GetItem '{"TableName":"lab-users","Key":{"pk":{"S":"u-ann"}}}' | jq -cS .Item)"
check_eq "ddb: the DynamoDB JSON item" '{"kind":{"S":"boot"},"labels":{"SS":["a","b"]},"seq":{"N":"1"},"stream":{"S":"s1"}}' \
	"$(ddb_direct GetItem '{"TableName":"lab-events","Key":{"stream":{"S":"s1"},"seq":{"N":"1"}}}' | jq -cS .Item)"
check_eq "ddb: the table's tags" '[{"Key":"env","Value":"lab"}]' \
	"$(ddb_direct ListTagsOfResource '{"ResourceArn":"arn:aws:dynamodb:us-east-1:000000000000:table/lab-users"}' | jq -c .Tags)"
ddb "$T/ddb-v1.json" plan --detailed-exitcode
check_rc "ddb: plan right after apply is empty" 0

say "DynamoDB: drift behind mecorch's back"
ddb_direct UpdateItem '{"TableName":"lab-users","Key":{"pk":{"S":"u-ann"}},"UpdateExpression":"SET age = :a","ExpressionAttributeValues":{":a":{"N":"43"}}}' >/dev/null
ddb_direct DeleteItem '{"TableName":"lab-users","Key":{"pk":{"S":"u-bob"}}}' >/dev/null
ddb_direct TagResource '{"ResourceArn":"arn:aws:dynamodb:us-east-1:000000000000:table/lab-users","Tags":[{"Key":"owner","Value":"someone"}]}' >/dev/null
ddb_direct UpdateTable '{"TableName":"lab-events","ProvisionedThroughput":{"ReadCapacityUnits":5,"WriteCapacityUnits":1}}' >/dev/null
events_active() { [ "$(ddb_direct DescribeTable '{"TableName":"lab-events"}' | jq -r .Table.TableStatus)" = ACTIVE ]; }
poll_until 60 events_active
ddb "$T/ddb-v1.json" plan --detailed-exitcode
check_rc "ddb: plan reports the drift" 2
check_out_has "ddb: a changed item is drift" "module.ddb.item.ann: drift detected (changed)"
check_out_has "ddb: the changed attribute" "~ attributes.age = 43 -> 42"
check_out_has "ddb: a deleted item is drift" "module.ddb.item.bob: drift detected (gone)"
check_out_has "ddb: an added tag is drift" '- tags.owner = "someone"'
check_out_has "ddb: changed capacity is drift" "~ read_capacity = 5 -> 2"
ddb "$T/ddb-v1.json" apply
check_rc "ddb: apply repairs the drift" 0
check_eq "ddb: the attribute is back" 42 \
	"$(ddb_direct GetItem '{"TableName":"lab-users","Key":{"pk":{"S":"u-ann"}}}' | jq -r .Item.age.N)"
ddb "$T/ddb-v1.json" plan --detailed-exitcode
check_rc "ddb: plan after the repair is empty" 0

say "DynamoDB: update in place and replace"
jq '.tables.users.tags = {"env": "lab", "rev": "2"} |
	.tables.events = {"name": "lab-events", "hash_key": {"name": "stream", "type": "S"},
	                  "range_key": {"name": "seq", "type": "N"}} |
	.tables.empty = {"name": "lab-empty", "hash_key": "id"} |
	.items.ann.attributes.age = 43 | .items.bob.key = {"pk": "u-robert"}' "$T/ddb-v1.json" >"$T/ddb-v2.json"
ddb "$T/ddb-v2.json" apply
check_rc "ddb: apply of the changes" 0
check_out_has "ddb: billing, tags and attributes in place, the item key replaces" \
	"1 created, 3 updated, 1 replaced, 0 destroyed"
check_eq "ddb: billing mode switched" PAY_PER_REQUEST \
	"$(ddb_direct DescribeTable '{"TableName":"lab-events"}' | jq -r .Table.BillingModeSummary.BillingMode)"
check_eq "ddb: items after the replace" "lab-users/pk=u-ann lab-users/pk=u-robert" "$(echo $(ddb_items lab-users '["pk"]'))"
jq '.tables.empty.hash_key = {"name": "id", "type": "N"}' "$T/ddb-v2.json" >"$T/ddb-v3.json"
ddb "$T/ddb-v3.json" apply
check_rc "ddb: a key schema change" 0
check_out_has "ddb: a key schema change replaces the table" "0 created, 0 updated, 1 replaced"
check_eq "ddb: the new key schema" "id N" \
	"$(ddb_direct DescribeTable '{"TableName":"lab-empty"}' | jq -r '.Table.AttributeDefinitions[0] | "\(.AttributeName) \(.AttributeType)"')"
ddb "$T/ddb-v3.json" plan --detailed-exitcode
check_rc "ddb: plan after the update is empty" 0

say "DynamoDB: a key schema change of a table with items"
jq '.tables.users.range_key = "sk" | .items.ann.key.sk = "profile" | .items.bob.key.sk = "profile"' \
	"$T/ddb-v3.json" >"$T/ddb-v3b.json"
ddb "$T/ddb-v3b.json" apply
check_rc "ddb: apply of the new key schema" 0
check_out_has "ddb: the table and its two items are replaced" "0 created, 0 updated, 3 replaced, 0 destroyed"
check_eq "ddb: the items under the new key" "lab-users/pk=u-ann,sk=profile lab-users/pk=u-robert,sk=profile" \
	"$(echo $(ddb_items lab-users '["pk","sk"]'))"
check_eq "ddb: the item's attributes came along" "Ann" \
	"$(ddb_direct GetItem '{"TableName":"lab-users","Key":{"pk":{"S":"u-ann"},"sk":{"S":"profile"}}}' | jq -r .Item.name.S)"
ddb "$T/ddb-v3b.json" plan --detailed-exitcode
check_rc "ddb: plan after the new key schema is empty" 0

say "DynamoDB: a wrong secret_key"
REJ0=$(proxy_stat "$DDBV_PORT" .rejected)
echo '{"tables": {"denied": {"name": "lab-denied", "hash_key": "pk"}}}' >"$T/ddb-denied.json"
mo apply "$DDB_PLAN" --state "$T/ddb-denied.db" --var endpoint="$DDB_ENDPOINT" --var access_key="$DDB_KEY" \
	--var secret_key=not-the-secret --var-file "$T/ddb-denied.json" --auto-approve
check_rc "ddb: apply with a wrong secret fails" 1
check_out_has "ddb: the error says the signature is wrong" "DynamoDB refused CreateTable (403 InvalidSignatureException"
check_out_has "ddb: the error says what to check" "check the module's access_key, secret_key and region"
check_eq "ddb: the table was not created" "lab-empty lab-events lab-users" "$(echo $(ddb_tables))"
DDB_BAD=$(($(proxy_stat "$DDBV_PORT" .rejected) - REJ0))
check_true "ddb: the verifier rejected the mis-signed request" test "$DDB_BAD" -ge 1

say "DynamoDB: dynalite killed in the middle of an apply"
jq '.tables.bulk = {"name": "lab-bulk", "hash_key": "id"} |
	.items += ([range(1; 21)] | map({key: "bulk\(.)", value: {table: "bulk", key: {"id": "i\(.)"},
		attributes: {n: .}}}) | from_entries)' "$T/ddb-v3b.json" >"$T/ddb-v4.json"
proxy_latency "$DDBV_PORT" 200
mo_bg "$T/ddb-crash.log" apply "$DDB_PLAN" --state "$T/ddb.db" --var endpoint="$DDB_ENDPOINT" \
	--var access_key="$DDB_KEY" --var secret_key="$DDB_SECRET" --var-file "$T/ddb-v4.json" \
	--auto-approve --parallelism 2 --retry-max 1 --retry-base-ms 50
APPLY_PID=$BG_PID
# As for S3: kill as soon as the bulk is under way, count once it is back.
bulk_count() { ddb_direct Scan '{"TableName":"lab-bulk","Select":"COUNT"}' | jq -r '.Count // 0'; }
bulk_started() { [ "$(bulk_count)" -ge 4 ]; }
if poll_until 120 bulk_started; then SEEN=yes; else SEEN=no; fi
APPLYING=no
kill -0 "$APPLY_PID" 2>/dev/null && APPLYING=yes
stop_pid "$DYNALITE_PID" KILL
mo_wait "$APPLY_PID"
check_eq "ddb: the bulk was under way (4 items written) before the kill" yes "$SEEN"
check_eq "ddb: the apply was still running when dynalite was killed" yes "$APPLYING"
check_eq "ddb: the interrupted apply fails" 1 "$BG_RC"
start_dynalite "$DDB_PORT" "$T/ddbdata"
BEFORE=$(bulk_count)
check_true "ddb: dynalite was killed part-way: some items written ($BEFORE of 20)" test "$BEFORE" -ge 1
check_true "ddb: dynalite was killed part-way: not all ($BEFORE of 20)" test "$BEFORE" -lt 20
proxy_latency "$DDBV_PORT" 0
ddb "$T/ddb-v4.json" apply
check_rc "ddb: the next apply recovers" 0
ddb "$T/ddb-v4.json" plan --detailed-exitcode
check_rc "ddb: plan after the recovery is empty" 0
check_eq "ddb: state == dynalite (tables)" "$(state_ids "$T/ddb.db" table | tr '\n' ' ')" "$(ddb_tables | tr '\n' ' ')"
check_eq "ddb: state == dynalite (items)" "$(state_ids "$T/ddb.db" item | tr '\n' ' ')" \
	"$( (ddb_items lab-users '["pk","sk"]'; ddb_items lab-bulk '["id"]'; ddb_items lab-events '["seq","stream"]') | LC_ALL=C sort | tr '\n' ' ')"
check_eq "ddb: the 20 bulk items, each once" "$(seq 1 20 | sed 's|^|lab-bulk/id=i|' | LC_ALL=C sort)" \
	"$(ddb_items lab-bulk '["id"]')"
check_eq "ddb: no item twice in the state" "" "$(state_ids "$T/ddb.db" item | uniq -d)"

say "DynamoDB: destroy"
ddb "$T/ddb-v4.json" destroy
check_rc "ddb: destroy" 0
check_eq "ddb: dynalite holds no table" "" "$(ddb_tables)"

say "DynamoDB: the verifier's account"
check_eq "ddb: every rejected request was a deliberately mis-signed one" "$DDB_BAD" "$(proxy_stat "$DDBV_PORT" .rejected)"
check_eq "ddb: every other request was verified" \
	"$(($(proxy_stat "$DDBV_PORT" .received) - DDB_BAD))" "$(proxy_stat "$DDBV_PORT" .verified)"
check_true "ddb: the verifier forwarded mecorch's requests ($(proxy_stat "$DDBV_PORT" .forwarded))" \
	test "$(proxy_stat "$DDBV_PORT" .forwarded)" -gt 100

finish
