#!/usr/bin/env bash
# Install the real third-party DICOM peers the test suite runs against:
# DCMTK (storescu, storescp, findscu, movescu, echoscu) and Orthanc with its DICOMweb plugin
# (the DICOMweb archive of the tests), from Debian packages;
# headless Chromium with its WebDriver, for the test of the admin status page; and rsyslog
# (with its TLS driver), the syslog collector the audit export tests deliver to; and HAProxy,
# the TCP load balancer in front of the several-node tests.
# Idempotent: when every tool is already present it does nothing and returns at once.
set -euo pipefail

tools=(storescu storescp findscu movescu echoscu Orthanc chromium chromedriver rsyslogd haproxy)
# rsyslog's TLS driver and Orthanc's DICOMweb plugin are libraries, not programs: checked by their files.
gtls_driver() { ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1; }
dicomweb_plugin() { ls /usr/lib/orthanc/libOrthancDicomWeb.so* >/dev/null 2>&1; }

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

if ! gtls_driver; then
    missing+=("rsyslog-gnutls")
fi

if ! dicomweb_plugin; then
    missing+=("orthanc-dicomweb")
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-peers: dcmtk, orthanc (with orthanc-dicomweb), chromium, rsyslog and haproxy already present, nothing to do"
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

# DPkg::Lock::Timeout: wait (bounded) for another apt run instead of failing at once.
"${as_root[@]}" apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q dcmtk orthanc orthanc-dicomweb chromium chromium-driver rsyslog rsyslog-gnutls haproxy >/dev/null

for tool in "${missing[@]}"; do
    if [ "$tool" = rsyslog-gnutls ]; then
        gtls_driver || { echo "install-peers: rsyslog's TLS driver still missing after apt-get install" >&2; exit 1; }
    elif [ "$tool" = orthanc-dicomweb ]; then
        dicomweb_plugin || { echo "install-peers: Orthanc's DICOMweb plugin still missing after apt-get install" >&2; exit 1; }
    elif ! have_tool "$tool"; then
        echo "install-peers: $tool still missing after apt-get install" >&2
        exit 1
    fi
done
echo "install-peers: installed dcmtk, orthanc, orthanc-dicomweb, chromium, rsyslog and haproxy (was missing: ${missing[*]})"
