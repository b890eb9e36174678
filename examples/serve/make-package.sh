#!/bin/sh
# make-package.sh - assemble the example application package.
#
#   examples/serve/make-package.sh zip DEST.zip     a zip to upload (PUT package_content)
#   examples/serve/make-package.sh git DEST_DIR     a git repository (appPkgPath git+file://DEST_DIR)
#
# The package is examples/serve/package (appd.json, plan.lua) plus the
# lab/generic module copied into modules/generic, so the package is
# self-contained.  Prints the SHA-256 to give as checksum.hash: of the zip
# file, or, for a git package, the tree digest (see docs/api.md).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
mode=${1:?usage: make-package.sh zip|git DEST}
dest=${2:?usage: make-package.sh zip|git DEST}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/pkg/modules/generic"
cp "$HERE/package/appd.json" "$HERE/package/plan.lua" "$work/pkg/"
cp "$ROOT/iac-modules/lab/generic/module.lua" "$work/pkg/modules/generic/"
tree_digest() {
	(cd "$1" && find . -type f ! -path './.git/*' -printf '%P\n' | LC_ALL=C sort |
		while IFS= read -r f; do printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"; done) |
		sha256sum | cut -d' ' -f1
}
case $mode in
zip)
	rm -f "$dest"
	dest_abs=$(cd "$(dirname "$dest")" && pwd)/$(basename "$dest")
	(cd "$work/pkg" && python3 -c '
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for d, _, fs in sorted(os.walk(".")):
        for f in sorted(fs):
            p = os.path.join(d, f)[2:]
            z.write(p, p)
' "$dest_abs")
	sha256sum "$dest" | cut -d' ' -f1
	;;
git)
	rm -rf "$dest"
	mkdir -p "$dest"
	cp -r "$work/pkg/." "$dest/"
	git -C "$dest" init -q -b main
	git -C "$dest" add -A
	git -C "$dest" -c user.name=lab -c user.email=lab@example.invalid commit -q -m "edge-echo 1.0.0"
	git -C "$dest" tag v1.0.0
	tree_digest "$dest"
	;;
*)
	echo "usage: make-package.sh zip|git DEST" >&2
	exit 2
	;;
esac
