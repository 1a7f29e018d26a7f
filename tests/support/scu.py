"""A pynetdicom storage SCU for tests that need per-instance statuses or hostile requests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

# Hostile UIDs must reach the guard as sent: the SCU must not refuse them itself.
pynetdicom_config.ENFORCE_UID_CONFORMANCE = False


def send_files(
    port: int,
    paths: Sequence[Path],
    *,
    calling_ae: str = "STORESCU",
    called_ae: str = "GUARD",
    on_result: Callable[[str, int | None], None] | None = None,
    timeout: float = 30,
) -> list[tuple[str, int | None]]:
    """Send ``paths`` on one association; return (SOP Instance UID, status or None) per file.

    A status of None means no response arrived (association lost). Sending stops at the
    first lost response: nothing after it was acknowledged.
    """
    datasets = [dcmread(p) for p in paths]
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    pairs = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in pairs:
        ae.add_requested_context(sop_class, syntax)
    results: list[tuple[str, int | None]] = []
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return [(str(ds.SOPInstanceUID), None) for ds in datasets]
    try:
        for ds in datasets:
            try:
                answer = assoc.send_c_store(ds)
            except (RuntimeError, OSError, ValueError):
                answer = None
            status = int(answer.Status) if answer is not None and "Status" in answer else None
            results.append((str(ds.SOPInstanceUID), status))
            if on_result is not None:
                on_result(str(ds.SOPInstanceUID), status)
            if status is None:
                break
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return results


def unacknowledged(pending: Sequence[tuple[str, Path]], results: Sequence[tuple[str, int | None]]) -> list[tuple[str, Path]]:
    """The (SOP Instance UID, path) pairs of ``pending`` that ``results`` did not answer with Success (to be sent again)."""
    done = {uid for uid, status in results if status == 0x0000}
    return [(uid, path) for uid, path in pending if uid not in done]
