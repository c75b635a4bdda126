#!/usr/bin/env bash
# Builds a PostgreSQL 15 image from Debian packages, for machines that can
# reach a Debian mirror but no container registry (nothing can be pulled):
# debootstrap bookworm into a folder, install postgresql-15 into it, import
# the folder as a base image, then add the entrypoint with a Dockerfile.
#
# Usage: docker/postgres/build.sh [IMAGE]   (default wayback-postgres:15-local)
# Env:   DEBIAN_MIRROR overrides the mirror read from /etc/apt/sources.list*;
#        REBUILD=1 builds even when the image exists.
set -euo pipefail
image="${1:-wayback-postgres:15-local}"
here="$(cd "$(dirname "$0")" && pwd)"

if [ "${REBUILD:-0}" != 1 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image exists (REBUILD=1 to build it again)"
  exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  # deb822 files: the first stanza whose Suites name bookworm (not -security).
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    mirror="$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/bookworm-security/ {
      for (i = 1; i <= NF; i++) if ($i == "URIs:") { print $(i+1); exit } }' "$f")"
    [ -n "$mirror" ] && break
  done
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror="$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)"
fi
if [ -z "$mirror" ]; then
  echo "wayback: no Debian bookworm mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR=http://your.mirror/debian" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "installing debootstrap"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q debootstrap
fi

work="$(mktemp -d /var/tmp/wayback-pg-image.XXXXXX)"
# debootstrap mounts proc and sys inside the rootfs while it installs:
# unmount them before removing the folder.
cleanup() {
  umount -l "$work/rootfs/proc" "$work/rootfs/sys" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"
echo "debootstrap bookworm from $mirror"
# minbase plus PostgreSQL; the package's postinst would create and start a
# "main" cluster: policy-rc.d forbids starting, and the cluster is removed
# below (the entrypoint makes its own in PGDATA).
mkdir -p "$rootfs/usr/sbin" "$rootfs/etc/postgresql-common"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
printf 'create_main_cluster = false\n' >"$rootfs/etc/postgresql-common/createcluster.conf"
debootstrap --variant=minbase --include=postgresql-15,ca-certificates,locales-all \
  bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -40 "$work/debootstrap.log" >&2
  echo "wayback: debootstrap failed (log above)" >&2
  exit 1
}
rm -f "$rootfs/usr/sbin/policy-rc.d"
rm -rf "$rootfs/var/lib/postgresql/15/main" "$rootfs/etc/postgresql/15/main" \
  "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"* "$rootfs/usr/share/doc" "$rootfs/usr/share/man"
[ -x "$rootfs/usr/lib/postgresql/15/bin/postgres" ] || { echo "wayback: postgresql-15 missing from the rootfs" >&2; exit 1; }

echo "importing rootfs"
tar -C "$rootfs" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . | docker import - "${image%%:*}-rootfs:bookworm" >/dev/null
rm -rf "$rootfs"  # not part of the build context below
mkdir "$work/ctx"
cp "$here/docker-entrypoint.sh" "$work/ctx/"
sed "s|^FROM .*|FROM ${image%%:*}-rootfs:bookworm|" "$here/Dockerfile" >"$work/ctx/Dockerfile"
docker build -q -t "$image" "$work/ctx"
echo "built $image"
