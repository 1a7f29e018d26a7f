#!/usr/bin/env bash
# Install what `make test-container` needs to build and run the guard's image without a Docker
# engine or an image registry: podman and buildah (build and run), runc (the OCI runtime that
# works in nested sandboxes; crun does not everywhere), slirp4netns (rootless-style networking
# with published ports), debootstrap (to make a Debian base image locally), and DCMTK (storescu,
# to send a study into the container).
# Idempotent: when every tool is present it does nothing and returns at once.
set -euo pipefail

tools=(podman buildah runc slirp4netns debootstrap storescu)
packages=(podman buildah runc slirp4netns debootstrap dcmtk)

have_tool() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]
}

missing=()
for tool in "${tools[@]}"; do
    have_tool "$tool" || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-container-tools: podman, buildah, runc, slirp4netns, debootstrap, dcmtk already present"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo -n)  # never prompt: CI has no terminal
else
    echo "install-container-tools: missing ${missing[*]}, and neither root nor sudo is available" >&2
    exit 1
fi

# Another apt run (for example install-peers.sh) may hold the lock: wait for it, bounded.
apt_opts=(-o DPkg::Lock::Timeout=600 -q)
"${as_root[@]}" apt-get "${apt_opts[@]}" update >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null

for tool in "${missing[@]}"; do
    if ! have_tool "$tool"; then
        echo "install-container-tools: $tool still missing after apt-get install" >&2
        exit 1
    fi
done
echo "install-container-tools: installed (was missing: ${missing[*]})"
