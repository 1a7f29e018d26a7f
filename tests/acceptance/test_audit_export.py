"""DICOM audit messages reach a real syslog collector (rsyslogd) over TCP and TLS, and survive its outage."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from lxml import etree

from guard.services.audit.atna import EXPORTED_EVENTS
from tests.acceptance.conftest import GuardFactory
from tests.support.certs import TestCA
from tests.support.dcmtk import store_responses, storescu
from tests.support.fixtures import StudyFactory, require_tools
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.rsyslog import CollectorTls, Rsyslog
from tests.support.waiting import wait_until

_SEQ = re.compile(r'\[meta sequenceId="(\d+)"\]')


def _delivered(collector: Rsyslog) -> Counter[int]:
    """How many times each audit record (by sequence number) reached the collector."""
    return Counter(int(m.group(1)) for line in collector.messages() if (m := _SEQ.search(line)))


def _exported(guard: GuardProcess) -> set[int]:
    """Sequence numbers of the guard's audit records that have a DICOM audit message."""
    seqs = set()
    for record in guard.audit_records():
        if record["event"] not in EXPORTED_EVENTS:
            continue
        if record["event"] == "delete.permitted" and record["detail"].get("backend") in {None, "decision-only"}:
            continue
        seqs.add(int(record["seq"]))
    return seqs


def _all_delivered_once(guard: GuardProcess, collector: Rsyslog) -> bool:
    delivered = _delivered(collector)
    return _exported(guard) <= set(delivered)


def _send(guard: GuardProcess, paths: list[Path]) -> None:
    result = storescu("127.0.0.1", guard.port, paths, calling_ae=SOURCE_AE, called_ae=GUARD_AE)
    assert store_responses(result) == ["Success"] * len(paths), result.stdout + result.stderr


def _guard(guard_factory: GuardFactory, archive: Orthanc, collector: Rsyslog, **audit: object) -> GuardProcess:
    settings = {"syslog_host": "127.0.0.1", "syslog_port": collector.port, "syslog_protocol": "tcp", "syslog_retry_max": 0.5, **audit}
    guard = guard_factory(archive_port=archive.dicom_port, audit=settings, confirm={"batch_wait": 0.2})
    archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
    return guard.start()


def test_messages_reach_rsyslog_over_tcp_and_none_is_lost_or_repeated_across_an_outage(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """Receive and forward are delivered; while the collector is down they wait in the ledger; afterwards each arrives once."""
    require_tools("rsyslogd")
    collector = Rsyslog(tmp_path / "rsyslog").start()
    try:
        guard = _guard(guard_factory, orthanc_archive, collector)
        first = synthetic_study(3)
        _send(guard, first.paths)
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="first study not confirmed")
        wait_until(lambda: _all_delivered_once(guard, collector), 30, message="first messages not delivered")
        events = {
            etree.fromstring(line.split("\ufeff", 1)[1].encode()).find("EventIdentification/EventID").get("csd-code")
            for line in collector.messages()
        }
        assert {"110100", "110104"} <= events  # Application Activity, DICOM Instances Transferred

        collector.stop()
        second = synthetic_study(4)
        _send(guard, second.paths)
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="second study not confirmed")
        waiting = _exported(guard) - set(_delivered(collector))
        assert len(waiting) >= 8  # 4 received + 4 forwarded, held in the outbox

        collector.start()
        wait_until(lambda: _all_delivered_once(guard, collector), 60, message="backlog not delivered after the collector came back")
        assert guard.terminate() == 0
        stopped = next(r["seq"] for r in guard.audit_records("service.stopped"))
        wait_until(lambda: stopped in _delivered(collector), 10, message="service.stopped not delivered")
        delivered = _delivered(collector)
        assert {seq for seq, n in delivered.items() if n > 1} == set()
        assert set(delivered) == _exported(guard)
    finally:
        collector.stop()


def test_messages_reach_rsyslog_over_tls(
    guard_factory: GuardFactory, orthanc_archive: Orthanc, synthetic_study: StudyFactory, tmp_path: Path
) -> None:
    """RFC 5425: the guard checks the collector's certificate against the configured CA and delivers over TLS."""
    require_tools("rsyslogd")
    ca = TestCA(tmp_path / "pki")
    server = ca.issue("127.0.0.1")
    collector = Rsyslog(tmp_path / "rsyslog", tls=CollectorTls(server=server, ca_file=ca.ca_file)).start()
    try:
        guard = _guard(guard_factory, orthanc_archive, collector, syslog_protocol="tls", syslog_ca_file=str(ca.ca_file))
        study = synthetic_study(2)
        _send(guard, study.paths)
        wait_until(lambda: set(guard.instance_states().values()) == {"confirmed"}, 60, message="study not confirmed")
        wait_until(lambda: _all_delivered_once(guard, collector), 30, message="messages not delivered over TLS")
        received = [line for line in collector.messages() if "110104" in line and 'EventActionCode="C"' in line]
        assert len(received) == 2
        assert all(study.study_uid in line for line in received)
    finally:
        collector.stop()
