#!/usr/bin/env bash
# Make a Debian base image locally, for building the guard's image where no image registry can
# be reached: debootstrap a minimal Debian root file system with python3 (3.11 on Debian 12),
# python3-venv and the CA certificates, then `podman import` it.
#
#   scripts/make-base-image.sh IMAGE_NAME CACHE_DIR [podman global options...]
#
# The Debian mirror and release are read at run time from this machine's own apt sources and
# /etc/os-release (DEBIAN_MIRROR and DEBIAN_SUITE override them). The root file system is kept
# in CACHE_DIR/rootfs.tar, so the download happens once; the import is skipped when the image
# already exists in podman's storage.
set -euo pipefail

image=${1:?usage: make-base-image.sh IMAGE_NAME CACHE_DIR [podman options]}
cache=${2:?usage: make-base-image.sh IMAGE_NAME CACHE_DIR [podman options]}
shift 2
podman_opts=("$@")

if podman "${podman_opts[@]}" image exists "$image"; then
    echo "make-base-image: $image already present"
    exit 0
fi

mirror_from_apt() {
    # deb822 sources first (Debian 12's default), then the one-line format. The first
    # archive that is not the security archive is the mirror.
    local uri
    uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(grep -hE '^deb\s' /etc/apt/sources.list | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
    fi
    echo "$uri"
}

suite=${DEBIAN_SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-}")}
mirror=${DEBIAN_MIRROR:-$(mirror_from_apt)}
if [ -z "$suite" ] || [ -z "$mirror" ]; then
    echo "make-base-image: cannot tell the Debian release or mirror from this machine; set DEBIAN_SUITE and DEBIAN_MIRROR" >&2
    exit 1
fi

mkdir -p "$cache"
tarball="$cache/rootfs-$suite.tar"
if [ ! -s "$tarball" ]; then
    rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    echo "make-base-image: debootstrap $suite from $mirror (once; cached in $tarball)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -n 30 "$cache/debootstrap.log" >&2; exit 1; }
    # mktemp made the folder 0700; as the image's / it must be traversable by every user.
    chmod 0755 "$rootfs"
    # Leave the package lists and caches out of the image.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
fi
podman "${podman_opts[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' "$tarball" "$image" >/dev/null
echo "make-base-image: imported $image"
