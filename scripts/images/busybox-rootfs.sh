#!/usr/bin/env bash
# busybox-rootfs.sh BUSYBOX OUT.tar
# Make a reproducible root file system tarball from Debian's busybox-static:
# /bin/busybox plus a symlink in /bin for every applet, /etc/passwd,
# /etc/group, /root, /tmp (1777) and /var/www (httpd's default home).
# Fixed owners and mtimes, sorted entries: the same busybox gives the same
# tarball byte for byte, hence the same image layer.
set -euo pipefail
bb=$1 out=$2
dir=$(mktemp -d /tmp/shoal-busybox-rootfs.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/etc" "$dir/root" "$dir/tmp" "$dir/var/www"
chmod 1777 "$dir/tmp"
chmod 700 "$dir/root"
install -m 0755 "$bb" "$dir/bin/busybox"
for applet in $("$bb" --list); do
    [ "$applet" = busybox ] && continue
    ln -s busybox "$dir/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$dir/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
tar -C "$dir" --sort=name --mtime='2000-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
    -cf "$out" .
