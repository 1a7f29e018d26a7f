#!/usr/bin/env bash
# Install the real third-party DICOM peers the test suite runs against:
# DCMTK (storescu, storescp, findscu, movescu, echoscu) and Orthanc, from Debian packages.
# Idempotent: when every tool is already present it does nothing and returns at once.
set -euo pipefail

tools=(storescu storescp findscu movescu echoscu Orthanc)

have_tool() {
    # Orthanc lives in /usr/sbin, which is not on PATH for every user.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

missing=()
for tool in "${tools[@]}"; do
    if ! have_tool "$tool"; then
        missing+=("$tool")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-peers: dcmtk and orthanc already present, nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    # -n: never prompt; a CI run has no terminal to answer a password prompt.
    as_root=(sudo -n)
else
    echo "install-peers: missing ${missing[*]}, and neither root nor sudo is available" >&2
    exit 1
fi

"${as_root[@]}" apt-get update -q >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q dcmtk orthanc >/dev/null

for tool in "${missing[@]}"; do
    if ! have_tool "$tool"; then
        echo "install-peers: $tool still missing after apt-get install" >&2
        exit 1
    fi
done
echo "install-peers: installed dcmtk and orthanc (was missing: ${missing[*]})"
