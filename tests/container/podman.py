"""Building and running the guard's image with podman, as this kind of machine allows.

There is no Docker engine and no image registry here. Debian's podman works with: its own
storage under ``var/container/storage`` (vfs driver, so no overlay mounts are needed), the
cgroupfs cgroup manager, the ``runc`` runtime, chroot isolation for builds, file-based events
(no journald) and explicit ulimits. The base image is a Debian root file system made by
``scripts/make-base-image.sh`` (debootstrap, then ``podman import``); the Python wheels the build
needs come from ``docker/wheelhouse`` (filled here by ``pip wheel`` on the host), so the build
itself needs no network.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.availability import unavailable

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "var" / "container"
BASE_IMAGE = "localhost/guard-base:bookworm"
IMAGE = "localhost/guard:test"
WHEELHOUSE = REPO / "docker" / "wheelhouse"
TOOLS = ("podman", "buildah", "runc", "debootstrap", "storescu")


def global_options() -> list[str]:
    """The global flags of podman for this machine (see the module docstring)."""
    return [
        "--root",
        str(CACHE / "storage"),
        "--runroot",
        str(CACHE / "runroot"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
        "--events-backend",
        "file",
    ]


def require_tools() -> None:
    """Skip (fail under CI) when a tool is missing; ``make test-container`` installs them first."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    if missing:
        unavailable(f"missing {', '.join(missing)}: run scripts/install-container-tools.sh (make test-container does)")


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``podman GLOBAL_OPTIONS ARGS``; a failure raises with podman's own words."""
    result = subprocess.run(["podman", *global_options(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        msg = f"podman {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        raise AssertionError(msg)
    return result


def make_base_image() -> None:
    """The Debian base image, made once and cached (root file system tarball and podman storage)."""
    subprocess.run(
        ["bash", str(REPO / "scripts" / "make-base-image.sh"), BASE_IMAGE, str(CACHE / "base"), *global_options()],
        check=True,
        timeout=900,
    )


def fill_wheelhouse() -> None:
    """Wheels of the guard's dependencies and of its build requirements, made by the host's pip."""
    WHEELHOUSE.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-qq", "--wheel-dir", str(WHEELHOUSE), str(REPO), "setuptools>=69", "wheel"],
        check=True,
        timeout=600,
    )
    for own in WHEELHOUSE.glob("dicom_guard-*.whl"):  # the image builds the guard from its sources
        own.unlink()


def build_image(base: str = BASE_IMAGE, tag: str = IMAGE) -> None:
    """``podman build`` of docker/Dockerfile, offline, in Docker format (OCI drops HEALTHCHECK)."""
    podman(
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--ulimit",
        "nofile=1024:1024",
        "--file",
        str(REPO / "docker" / "Dockerfile"),
        "--tag",
        tag,
        str(REPO),
        timeout=1200,
    )
    podman("image", "prune", "--force", timeout=300)  # earlier builds' layers: hundreds of MB each with vfs
