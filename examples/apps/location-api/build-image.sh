#!/usr/bin/env bash
# build-image.sh - build the location-api container image as a tarball:
# busybox-static plus location-api.c compiled statically, nothing else.
#
#   build-image.sh [-o OUT] [--docker-archive] [--tag NAME] [--cc CC]
#
# Default: OUT (default ./location-api-rootfs.tar) is a root filesystem tar
# for an image *import*: Docker's `POST /images/create?fromSrc=<URL or ->`,
# `podman import`, or the edge-cloud/containers module's `image` resource.
# An imported rootfs has no metadata, so give the command with it:
#   CMD ["/usr/local/bin/location-api"]   (listens on 0.0.0.0:8081)
#
# --docker-archive: OUT is instead a `docker save`-style archive (manifest.json,
# image config with Cmd, ExposedPorts 8081/tcp, and the layer), tagged NAME
# (default localhost/location-api:1), for `POST /images/load`, podman's
# `/libpod/images/load`, `podman load` or `docker load`.
#
# The tar is reproducible (sorted names, fixed mtimes and owners), so the same
# sources give the same SHA-256, which is printed last as "sha256 <hex>".
# Needs gcc with a static libc (libc6-dev) and busybox-static (/bin/busybox).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=$PWD/location-api-rootfs.tar
format=rootfs
tag=localhost/location-api:1
cc=${CC:-gcc}

while [ $# -gt 0 ]; do
	case $1 in
	-o) out=$2; shift 2 ;;
	--docker-archive) format=docker-archive; shift ;;
	--tag) tag=$2; shift 2 ;;
	--cc) cc=$2; shift 2 ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
case $out in /*) ;; *) out=$PWD/$out ;; esac

busybox=/bin/busybox
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
	echo "build-image.sh: $busybox must be busybox-static (apt-get install busybox-static)" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/location-api-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,usr/local/bin}
chmod 1777 "$root/tmp"

"$cc" -std=c11 -static -O2 -Wall -Wextra -o "$root/usr/local/bin/location-api" \
	"$here/location-api.c"
strip "$root/usr/local/bin/location-api" 2>/dev/null || true
cp "$busybox" "$root/bin/busybox"
for applet in sh ash cat echo env hostname id kill ls nc ps sleep wget; do
	ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
echo 'location-api' >"$root/etc/hostname"

# tar --sort/--mtime/--owner make the archive depend on the content only.
det_tar() { # det_tar OUT DIR [PATHS...]
	local o=$1 d=$2
	shift 2
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
		-C "$d" -cf "$o" "$@"
}

if [ "$format" = rootfs ]; then
	det_tar "$out" "$root" .
else
	layer=$work/layer.tar
	det_tar "$layer" "$root" .
	layer_sha=$(sha256sum "$layer" | cut -d' ' -f1)
	arc=$work/archive
	mkdir -p "$arc/$layer_sha"
	mv "$layer" "$arc/$layer_sha/layer.tar"
	cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Cmd":["/usr/local/bin/location-api"],"ExposedPorts":{"8081/tcp":{}},"Env":["PATH=/usr/local/bin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"examples/apps/location-api/build-image.sh"}]}
EOF
	config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
	mv "$work/config.json" "$arc/$config_sha.json"
	printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
		"$config_sha" "$tag" "$layer_sha" >"$arc/manifest.json"
	printf '{"%s":{"%s":"%s"}}\n' "${tag%:*}" "${tag##*:}" "$layer_sha" >"$arc/repositories"
	det_tar "$out" "$arc" .
fi

echo "$out"
echo "sha256 $(sha256sum "$out" | cut -d' ' -f1)"
