# lib_probe.sh - a real package for the ssh-host tests to install on the lab
# sites, sourced by test_ssh_host.sh and test_interconnect.sh after lib.sh
# (needs LABDIR, LAB_PREFIX and T).
#
#   probe_setup        build the package, serve it from a local apt source
#   probe_cleanup      purge it, remove the source (call from the EXIT trap)
#   probe_installed    dpkg says it is installed
#   probe_installs     how many times dpkg installed it
#
# The sites are network namespaces of this machine: they share its
# filesystem, so its dpkg database, and a package "installed on a site" is
# installed on this machine (and, as far as dpkg can tell, on every site).
# So the package is a dummy one made here (one file, /usr/share/PROBE/probe;
# no dependencies, no maintainer scripts), named after the lab's unique
# prefix so that nothing else can have that name, and served from a local
# apt repository (file:, [trusted=yes]) that an apt source list makes
# visible to the module's plain `apt-get install`.  Only that source is
# indexed (apt-get update of it alone: the machine's other sources are left
# as they are).  probe_cleanup, from the EXIT trap, purges the package and
# removes the source list and its index (probe_sweep, at the next run, what
# a SIGKILL left).
PROBE=
APT_LIST=
APT_INDEX=

# probe_sweep: what a run killed before its EXIT trap (SIGKILL) left: a
# source list whose repository directory is gone (it would make every
# `apt-get update` on the machine fail), its index and its package.  A
# running test's repository still exists, so its list is left alone.
probe_sweep() {
	local f repo
	for f in /etc/apt/sources.list.d/mecorch-lab-probe-*.list; do
		[ -f "$f" ] || continue
		repo=$(sed -n 's/^deb \[trusted=yes\] file:\([^ ]*\) .*/\1/p' "$f")
		[ -n "$repo" ] && [ -d "$repo" ] && continue
		dpkg --purge "$(basename "$f" .list)" >/dev/null 2>&1
		[ -n "$repo" ] && rm -f /var/lib/apt/lists/"$(printf '%s' "$repo" | tr / _)"_._*
		rm -f "$f"
	done
}

probe_setup() {
	local d=$LABDIR/apt
	probe_sweep
	PROBE=mecorch-lab-probe-$LAB_PREFIX
	mkdir -p "$d/pkg/DEBIAN" "$d/pkg/usr/share/$PROBE" "$d/repo"
	cat >"$d/pkg/DEBIAN/control" <<-EOF
		Package: $PROBE
		Version: 1.0
		Architecture: all
		Maintainer: mecorch tests <tests@mecorch.invalid>
		Description: dummy package of the mecorch ssh lab
		 Installed by the mecorch integration tests ($0); safe to purge.
	EOF
	echo "$PROBE 1.0" >"$d/pkg/usr/share/$PROBE/probe"
	dpkg-deb --root-owner-group --build "$d/pkg" "$d/repo/${PROBE}_1.0_all.deb" >/dev/null || return 1
	if command -v dpkg-scanpackages >/dev/null; then
		(cd "$d/repo" && dpkg-scanpackages . /dev/null 2>/dev/null >Packages) || return 1
	else # dpkg-dev missing: the stanza by hand
		{
			dpkg-deb -f "$d/repo/${PROBE}_1.0_all.deb"
			echo "Filename: ./${PROBE}_1.0_all.deb"
			echo "Size: $(stat -c %s "$d/repo/${PROBE}_1.0_all.deb")"
			echo "SHA256: $(sha256sum <"$d/repo/${PROBE}_1.0_all.deb" | cut -c1-64)"
		} >"$d/repo/Packages"
	fi
	gzip -9 -k "$d/repo/Packages"
	chmod -R a+rX "$d"
	APT_LIST=/etc/apt/sources.list.d/$PROBE.list
	# apt names an index after its URI, every '/' turned into '_'
	APT_INDEX=/var/lib/apt/lists/$(printf '%s' "$d/repo" | tr / _)_._
	echo "deb [trusted=yes] file:$d/repo ./" >"$APT_LIST"
	apt-get update -q -o Dir::Etc::SourceList="$APT_LIST" -o Dir::Etc::SourceParts=- \
		-o APT::Get::List-Cleanup=0 >"$T/apt-update.log" 2>&1
}

probe_cleanup() {
	[ -n "$PROBE" ] || return 0
	dpkg --purge "$PROBE" >/dev/null 2>&1
	[ -n "$APT_LIST" ] && rm -f "$APT_LIST"
	[ -n "$APT_INDEX" ] && rm -f "$APT_INDEX"*
	return 0
}

# probe_installed: dpkg says PROBE is installed (on the machine, so on every site)
probe_installed() {
	dpkg-query -W -f='${Status}' "$PROBE" 2>/dev/null | grep -q '^install ok installed$'
}

# probe_installs: how many times dpkg has installed PROBE (its log records
# one "install" line per unpack of a package that was not installed)
probe_installs() {
	grep -c " install $PROBE:all " /var/log/dpkg.log 2>/dev/null
}
