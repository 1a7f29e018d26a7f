"""One timed run of a study into a fresh Orthanc archive: directly, or through a fresh guard.

The clock starts when ``storescu`` is started and stops at the first poll of Orthanc's
``/statistics`` that counts every instance of the study: the time until the last instance
is in the archive. When ``storescu`` itself finished is recorded too (for the guard path,
that is the guard's ingest time). Every wait is bounded; a run that does not complete
raises ``BenchError`` with what is known.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.options import LISTENER_PROCESS
from bench.procfs import MachineCpu, RssSampler, cpu_seconds, settle, tree_cpu_seconds, tree_status_kib, tree_status_parts_kib
from bench.stacks import start_profiler, stop_profiler
from guard.config.settings import ForwardSettings
from tests.support.datasets import Study
from tests.support.dcmtk import store_responses, storescu
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.postgres import scratch_database
from tests.support.waiting import wait_until

ARCHIVE_AE = "ARCHIVE"
#: The guard's own default number of forwarding workers, which the benchmark uses unless told otherwise.
DEFAULT_WORKERS = ForwardSettings().workers
DEFAULT_FORWARD_NICE = ForwardSettings().nice
DIRECT = "direct"
THROUGH_GUARD = "guard"
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
#: Forwarding settings for a benchmark (the test defaults use a 3 s lease and tiny backoffs).
FORWARD_SETTINGS: dict[str, Any] = {"lease_seconds": 30, "backoff_base": 1, "backoff_max": 10, "idle_poll": 0.05}


class BenchError(RuntimeError):
    """A run could not be completed: storescu failed, or the archive never held every instance."""


@dataclass(frozen=True)
class BenchConfig:
    """Settings shared by every run."""

    storescu_pdu: int | None = 131072
    archive_pdu: int | None = None
    workers: int = DEFAULT_WORKERS
    forward_nice: int = DEFAULT_FORWARD_NICE
    listener_process: bool = LISTENER_PROCESS
    ledger: str = SQLITE
    poll_interval: float = 0.05
    timeout: float = 600.0
    profile_dir: Path | None = None
    profile_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class StudyFiles:
    """Generated studies, one per sender: their folders (each holding only its study), UIDs and total size in bytes."""

    directories: tuple[Path, ...]
    studies: tuple[Study, ...]
    total_bytes: int

    @property
    def count(self) -> int:
        """Number of instances, all studies together."""
        return sum(len(study.sop_instance_uids) for study in self.studies)

    @property
    def senders(self) -> int:
        """Number of storescu associations at once: one per study."""
        return len(self.studies)


@dataclass(frozen=True)
class RunResult:
    """The measured figures of one run of one path."""

    path: str
    size: int
    total_bytes: int
    senders: int
    archive_seconds: float
    storescu_seconds: float
    machine_cpu_percent: float
    guard_peak_rss_kib: int | None = None
    guard_sampled_rss_kib: int | None = None
    guard_start_rss_kib: int | None = None
    #: VmHWM of each of the guard's processes, the main process first (then its listener process).
    guard_peak_rss_parts_kib: tuple[int, ...] = ()
    confirm_seconds: float | None = None
    guard_cpu_seconds: float | None = None
    archive_cpu_seconds: float | None = None
    ledger: str | None = None
    ledger_states: dict[str, int] = field(default_factory=dict)
    profile: str | None = None

    @property
    def instances_per_second(self) -> float:
        """Instances in the archive per second of the whole run."""
        return self.size / self.archive_seconds

    @property
    def mb_per_second(self) -> float:
        """Megabytes (10^6 bytes, file sizes) in the archive per second of the whole run."""
        return self.total_bytes / 1e6 / self.archive_seconds

    @property
    def ingest_per_second(self) -> float:
        """Instances acknowledged to storescu per second."""
        return self.size / self.storescu_seconds


@dataclass(frozen=True)
class _Timing:
    archive_seconds: float
    storescu_seconds: float


def _count(archive: Orthanc) -> int:
    """Orthanc's instance count, or -1 when the REST call fails this time."""
    try:
        return archive.count_instances()
    except httpx.HTTPError:
        return -1


def _check_storescu(box: dict[str, Any], study: Study) -> None:
    """Raise if a finished storescu failed or did not get Success for every instance of its study."""
    if "error" in box:
        msg = f"storescu failed to run: {box['error']!r}"
        raise BenchError(msg)
    result: subprocess.CompletedProcess[str] = box["result"]
    responses = store_responses(result)
    expected = len(study.sop_instance_uids)
    if result.returncode != 0 or responses.count("Success") != expected:
        tail = (result.stdout + result.stderr)[-3000:]
        msg = f"storescu exited {result.returncode} with {responses.count('Success')}/{expected} Success responses:\n{tail}"
        raise BenchError(msg)


def _sender(port: int, called_ae: str, directory: Path, cfg: BenchConfig, box: dict[str, Any]) -> threading.Thread:
    """A thread that sends one study folder with storescu on one association, its outcome into ``box``."""

    def send() -> None:
        try:
            box["result"] = storescu(
                "127.0.0.1", port, directory, calling_ae=SOURCE_AE, called_ae=called_ae, timeout=cfg.timeout, max_pdu=cfg.storescu_pdu
            )
        except (OSError, subprocess.SubprocessError) as exc:
            box["error"] = exc
        box["end"] = time.monotonic()

    return threading.Thread(target=send, name="storescu", daemon=True)


def _timed_send(archive: Orthanc, port: int, called_ae: str, files: StudyFiles, cfg: BenchConfig) -> _Timing:
    """Send every study at once (one storescu each) and time it until Orthanc counts every instance.

    The storescu time is when the last of them finished: what the sending PACS waited for.
    """
    boxes: list[dict[str, Any]] = [{} for _ in files.studies]
    senders = [_sender(port, called_ae, d, cfg, box) for d, box in zip(files.directories, boxes, strict=True)]
    start = time.monotonic()
    for sender in senders:
        sender.start()
    deadline = start + cfg.timeout
    count = 0
    while True:
        count = _count(archive)
        now = time.monotonic()
        if count >= files.count:
            archive_seconds = now - start
            break
        for sender, box, study in zip(senders, boxes, files.studies, strict=True):
            if not sender.is_alive():
                _check_storescu(box, study)
        if now > deadline:
            msg = f"the archive held {count} of {files.count} instances after {cfg.timeout:.0f} s"
            raise BenchError(msg)
        time.sleep(cfg.poll_interval)
    for sender in senders:
        sender.join(max(1.0, deadline - time.monotonic()))
        if sender.is_alive():
            msg = f"storescu still running after {cfg.timeout:.0f} s although the archive holds every instance"
            raise BenchError(msg)
    for box, study in zip(boxes, files.studies, strict=True):
        _check_storescu(box, study)
    return _Timing(archive_seconds=archive_seconds, storescu_seconds=max(box["end"] for box in boxes) - start)


def _verify_archive(archive: Orthanc, files: StudyFiles) -> None:
    """Check that the archive holds exactly the studies' instances (not timed)."""
    for study in files.studies:
        held = archive.instance_uids_of_study(study.study_uid)
        expected = set(study.sop_instance_uids)
        if held != expected:
            msg = f"archive holds {len(held & expected)} of {len(expected)} instances and {len(held - expected)} unexpected ones"
            raise BenchError(msg)


def _cpu_of(pid: int | None) -> float | None:
    """User + system seconds of one process so far, or None when it cannot be read."""
    return None if pid is None else cpu_seconds(pid)


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _orthanc(workdir: Path, cfg: BenchConfig) -> Orthanc:
    """A fresh Orthanc archive (TCP_NODELAY=1 is set by the test support for every peer)."""
    extra = {} if cfg.archive_pdu is None else {"MaximumPduLength": cfg.archive_pdu}
    return Orthanc(workdir / "orthanc", aet=ARCHIVE_AE, extra_config=extra)


def run_direct(files: StudyFiles, workdir: Path, cfg: BenchConfig) -> RunResult:
    """Send the study from storescu straight to a fresh Orthanc."""
    try:
        with _orthanc(workdir, cfg) as archive:
            before, archive_before = MachineCpu.now(), _cpu_of(archive.pid)
            timing = _timed_send(archive, archive.dicom_port, ARCHIVE_AE, files, cfg)
            busy, archive_after = MachineCpu.now().busy_percent_since(before), _cpu_of(archive.pid)
            _verify_archive(archive, files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return RunResult(
        path=DIRECT,
        size=files.count,
        total_bytes=files.total_bytes,
        senders=files.senders,
        archive_seconds=timing.archive_seconds,
        storescu_seconds=timing.storescu_seconds,
        machine_cpu_percent=busy,
        archive_cpu_seconds=_difference(archive_before, archive_after),
    )


def _ledger_states(guard: GuardProcess, expected: int, start: float) -> tuple[dict[str, int], float | None]:
    """State counts of the guard's ledger once settled, and seconds from ``start`` until every instance was confirmed.

    Not part of the timed figures. Waits (bounded) until every instance is forwarded or confirmed,
    then, when the guard is configured to confirm (a ``confirm`` section), until all are confirmed.
    """

    def counts() -> dict[str, int]:
        return dict(collections.Counter(guard.instance_states().values()))

    def settled() -> dict[str, int]:
        now = counts()
        return now if now.get("forwarded", 0) + now.get("confirmed", 0) >= expected else {}

    def confirmed() -> dict[str, int]:
        now = counts()
        return now if now.get("confirmed", 0) >= expected else {}

    try:
        states = wait_until(settled, 30, interval=0.2)
        if "confirm" in guard.config:
            states = wait_until(confirmed, 60, interval=0.2)
            return states, time.monotonic() - start
    except TimeoutError:
        return counts(), None
    return states, None


def _measure_guard(guard: GuardProcess, archive: Orthanc, files: StudyFiles, cfg: BenchConfig) -> RunResult:
    """Time one send through a started guard, with its CPU, RSS and (optionally) a py-spy profile."""
    pid = guard.proc.pid if guard.proc is not None else -1
    settle(pid)
    profile = None if cfg.profile_dir is None else cfg.profile_dir / f"guard-{files.count}-{int(time.time())}.txt"
    profiler = None if profile is None else start_profiler(pid, profile, cfg.profile_args)
    try:
        start_rss = tree_status_kib(pid, "VmRSS")
        cpu_before, machine_before, started = tree_cpu_seconds(pid), MachineCpu.now(), time.monotonic()
        archive_before = _cpu_of(archive.pid)
        with RssSampler(pid, cfg.poll_interval) as sampler:
            timing = _timed_send(archive, guard.port, GUARD_AE, files, cfg)
        cpu_after, busy = tree_cpu_seconds(pid), MachineCpu.now().busy_percent_since(machine_before)
        archive_after = _cpu_of(archive.pid)
    finally:
        if profiler is not None:
            stop_profiler(profiler)
    _verify_archive(archive, files)
    states, confirm_seconds = _ledger_states(guard, files.count, started)
    return RunResult(
        path=THROUGH_GUARD,
        size=files.count,
        total_bytes=files.total_bytes,
        senders=files.senders,
        ledger=cfg.ledger,
        archive_seconds=timing.archive_seconds,
        storescu_seconds=timing.storescu_seconds,
        machine_cpu_percent=busy,
        # VmHWM: the kernel's record of the peak resident set over the process's life, read before it stops.
        guard_peak_rss_kib=tree_status_kib(pid, "VmHWM"),
        guard_peak_rss_parts_kib=tree_status_parts_kib(pid, "VmHWM"),
        guard_sampled_rss_kib=sampler.max_kib or None,
        guard_start_rss_kib=start_rss,
        guard_cpu_seconds=_difference(cpu_before, cpu_after),
        archive_cpu_seconds=_difference(archive_before, archive_after),
        ledger_states=states,
        confirm_seconds=confirm_seconds,
        profile=None if profile is None else str(profile),
    )


@contextlib.contextmanager
def _ledger_url(workdir: Path, ledger: str) -> Iterator[str]:
    """The guard's ledger: a file in ``workdir``, or a fresh database on the local PostgreSQL server."""
    if ledger == POSTGRESQL:
        with scratch_database("guard_bench") as (url, _admin):
            yield url
    else:
        yield f"sqlite:///{workdir / 'guard' / 'ledger.sqlite'}"


def run_through_guard(files: StudyFiles, workdir: Path, cfg: BenchConfig) -> RunResult:
    """Send the studies from storescu to a fresh guard that forwards them to a fresh Orthanc."""
    with _ledger_url(workdir, cfg.ledger) as url:
        return _run_through_guard(files, workdir, cfg, url)


def _run_through_guard(files: StudyFiles, workdir: Path, cfg: BenchConfig, ledger_url: str) -> RunResult:
    try:
        archive = _orthanc(workdir, cfg)
        guard = GuardProcess(
            workdir / "guard",
            fresh=True,  # a new interpreter, as production starts it (not forked from the tests' preloaded server)
            archive_port=archive.dicom_port,
            archive_ae=ARCHIVE_AE,
            ledger_url=ledger_url,
            forward={**FORWARD_SETTINGS, "workers": cfg.workers, "nice": cfg.forward_nice},
            node={"listener_process": cfg.listener_process},
        )
        if "confirm" in guard.config:
            # The test support tunes confirmation for quick tests (0.2 s rounds); measure the guard's own defaults.
            guard.config["confirm"] = {}
        # Orthanc answers Storage Commitment only to, and reports only to, modalities it knows.
        archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
        with archive:
            try:
                guard.start(timeout=60)
                return _measure_guard(guard, archive, files, cfg)
            except (BenchError, TimeoutError, RuntimeError) as exc:
                msg = f"{exc}\nguard log ({guard.log_path}):\n{guard.log_tail(15)}"
                raise BenchError(msg) from exc
            finally:
                guard.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
