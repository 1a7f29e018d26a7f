"""The forwarding leg alone: the guard's pynetdicom sender against DCMTK ``dcmsend`` (ADR 0012).

``python -m bench.forward_leg --instances 200`` (run from the repository root) sends the same
synthetic 512x512 16-bit CT files to a fresh Orthanc twice: with the guard's ``ArchiveSender``
(one association, reused, pynetdicom set up as ``guard serve`` sets it; this process's CPU) and with ``dcmsend`` in batches of 32 (one
association a batch, as a worker would; the children's CPU). Then it sends one data set with an
undefined-length sequence to a bit-preserving DCMTK ``storescp`` (``+B``) both ways and says
whether the archive received the data set bytes the guard holds: the proof of bytes compares
exactly those.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydicom import dcmread

from bench.runs import ARCHIVE_AE
from guard import runtime
from guard.config.settings import ArchiveSettings
from guard.dicom.store import ArchiveSender
from guard.domain.digest import dataset_offset
from tests.support.datasets import make_study, make_undefined_length_instance
from tests.support.guard import GUARD_AE
from tests.support.orthanc import Orthanc
from tests.support.processes import find_tool
from tests.support.storescp import Storescp

BATCH = 32


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: A file to send with its SOP Class and Transfer Syntax UIDs (the ledger knows them; the worker reads nothing).
Item = tuple[Path, str, str]


def _items(paths: list[Path]) -> list[Item]:
    metas = [dcmread(path, stop_before_pixels=True) for path in paths]
    return [(path, str(m.SOPClassUID), str(m.file_meta.TransferSyntaxUID)) for path, m in zip(paths, metas, strict=True)]


def _send_pynetdicom(port: int, items: list[Item]) -> None:
    sender = ArchiveSender(GUARD_AE, ArchiveSettings(ae_title=ARCHIVE_AE, host="127.0.0.1", port=port), timeout=30, max_pdu=262144)
    with sender:
        for path, sop_class, syntax in items:
            sender.send(path, sop_class, syntax)


def _send_dcmsend(port: int, items: list[Item]) -> None:
    for start in range(0, len(items), BATCH):
        argv = [find_tool("dcmsend"), "-aet", GUARD_AE, "-aec", ARCHIVE_AE, "-nh", "-dn", "127.0.0.1", str(port)]
        subprocess.run([*argv, *(str(path) for path, _, _ in items[start : start + BATCH])], check=True, capture_output=True, timeout=300)


def _measure(label: str, send: object, files: list[Item], workdir: Path) -> str:
    with Orthanc(workdir / f"orthanc-{label}", aet=ARCHIVE_AE) as archive:
        started, own, children = time.monotonic(), _own_cpu(), _children_cpu()
        send(archive.dicom_port, files)  # type: ignore[operator]
        wall = time.monotonic() - started
        spent_own, spent_children = _own_cpu() - own, _children_cpu() - children
        held = archive.count_instances()
    count = len(files)
    return (
        f"{label:10}  {count / wall:7.1f} inst/s  sender CPU {1000 * (spent_own + spent_children) / count:6.2f} ms/inst"
        f"  (archive holds {held} of {count})"
    )


def _data_set_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data[:4096]) :]


def _bytes_kept(label: str, send: object, source: Path, workdir: Path) -> str:
    with Storescp(workdir / f"storescp-{label}", aet=ARCHIVE_AE, extra_args=["+B"]) as scp:
        send(scp.port, _items([source]))  # type: ignore[operator]
        uid = str(dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        scp.wait_for([uid])
        [received] = scp.received_files()
    same = _data_set_bytes(received) == _data_set_bytes(source)
    return f"{label:10}  data set bytes the archive received {'equal' if same else 'DIFFER FROM'} the guard's copy"


def main(argv: list[str] | None = None) -> int:
    """Measure both senders and the byte check, print the figures."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.forward_leg", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=200, help="instances to send each way (default 200)")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="guard-bench-forward-"))
    try:
        # pynetdicom set up as ``guard serve`` sets it: files sent as they are, event-driven association threads.
        (root / "incoming").mkdir()
        runtime.configure_dicom(root / "incoming")
        files = _items(list(make_study(root / "study", args.instances, rows=512, columns=512, patient_id="BENCHFWD").paths))
        lines = [f"Forwarding leg: {args.instances} instances of 512x512 16-bit CT to a fresh Orthanc (MaximumPduLength 16384)"]
        lines += [_measure("pynetdicom", _send_pynetdicom, files, root), _measure("dcmsend", _send_dcmsend, files, root)]
        odd = root / "odd.dcm"
        make_undefined_length_instance(odd, patient_id="BENCHODD")
        lines += [_bytes_kept("pynetdicom", _send_pynetdicom, odd, root), _bytes_kept("dcmsend", _send_dcmsend, odd, root)]
        print("\n".join(lines))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
