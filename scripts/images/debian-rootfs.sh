#!/usr/bin/env bash
# debian-rootfs.sh SUITE MIRROR INCLUDE OUT.tar CACHE_DIR
# debootstrap --variant=minbase --include=INCLUDE SUITE into a scratch
# directory under CACHE_DIR, trim what a container image does not need, and
# write it as OUT.tar (atomically: a half-made tarball never has OUT's name).
set -euo pipefail
suite=$1 mirror=$2 include=$3 out=$4 cache=$5
dir=$cache/rootfs.$$
trap 'rm -rf "$dir" "$out.tmp"' EXIT
rm -rf "$dir"; mkdir -p "$dir"
if ! debootstrap --variant=minbase --include="$include" "$suite" "$dir" "$mirror" >"$cache/debootstrap.log" 2>&1; then
    tail -n 40 "$cache/debootstrap.log" >&2
    [ -f "$dir/debootstrap/debootstrap.log" ] && tail -n 40 "$dir/debootstrap/debootstrap.log" >&2
    echo "debootstrap failed" >&2; exit 1
fi
# Container-friendly apt: no recommends, no cached .debs.
cat >"$dir/etc/apt/apt.conf.d/90shoal-container" <<'CONF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
CONF
# The mirror, the updates suite too (as the host has it).
printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$dir/etc/apt/sources.list"
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log \
       "$dir"/var/cache/apt/*.bin "$dir"/debootstrap
: >"$dir/etc/hostname"
tar -C "$dir" --numeric-owner --xattrs -cf "$out.tmp" .
mv "$out.tmp" "$out"
