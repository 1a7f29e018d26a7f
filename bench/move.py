"""C-MOVE relay against Orthanc moving directly: ``python -m bench.move`` (run from the repository root).

One Orthanc archive holds a study of synthetic 512x512 16-bit CT instances. DCMTK ``movescu``
asks for it to be moved to a DCMTK ``storescp``:

- directly: ``movescu`` -> Orthanc, which sends every instance to the storescp;
- through the guard: ``movescu`` -> guard, which moves the study from Orthanc to itself and
  relays each instance to the storescp as it arrives (``docs/query-retrieve.md``).

The clock runs from starting movescu until the storescp has written every instance (polled; the
final C-MOVE response can come a moment before the last file is on disk). Figures: instances
per second, guard/direct ratio against the target of 0.8, and the CPU per instance of the guard
(all its processes) and of Orthanc. Never asserted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.options import LISTENER_PROCESS, add_listener_process_arg
from bench.procfs import cpu_seconds, settle, tree_cpu_seconds
from bench.report import TARGET_RATIO
from bench.runs import ARCHIVE_AE, DEFAULT_FORWARD_NICE
from bench.stacks import add_profile_arg, start_profiler, stop_profiler
from tests.support.datasets import Study, make_study
from tests.support.dcmtk import final_response, movescu
from tests.support.guard import GUARD_AE, SOURCE_AE, GuardProcess
from tests.support.orthanc import Orthanc
from tests.support.storescp import Storescp

DESTINATION_AE = "STORESCP"


class MoveBenchError(RuntimeError):
    """A move did not complete: no Success, or the destination lacks instances."""


@dataclass(frozen=True)
class MoveRun:
    """One timed C-MOVE."""

    path: str
    instances: int
    seconds: float
    mover_cpu_seconds: float | None
    archive_cpu_seconds: float | None

    @property
    def per_second(self) -> float:
        """Instances delivered per second."""
        return self.instances / self.seconds


def _timed_move(port: int, called_ae: str, study: Study, destination: Storescp, timeout: float) -> float:
    """Move ``study`` to ``destination`` through ``called_ae`` at ``port``; seconds until the destination holds every instance."""
    started = time.monotonic()
    result = movescu(
        "127.0.0.1",
        port,
        calling_ae=SOURCE_AE,
        called_ae=called_ae,
        move_destination=DESTINATION_AE,
        level="STUDY",
        keys={"StudyInstanceUID": study.study_uid},
        timeout=timeout,
    )
    if final_response(result) != "Success":
        msg = f"C-MOVE through {called_ae} ended with {final_response(result)!r}:\n{(result.stdout + result.stderr)[-2000:]}"
        raise MoveBenchError(msg)
    held = destination.wait_for(study.sop_instance_uids, timeout=60)
    seconds = time.monotonic() - started
    if held != set(study.sop_instance_uids):
        msg = f"the destination holds {len(held)} of {len(study.sop_instance_uids)} instances"
        raise MoveBenchError(msg)
    return seconds


def _cpu(pid: int | None, *, tree: bool = False) -> float | None:
    if pid is None:
        return None
    return tree_cpu_seconds(pid) if tree else cpu_seconds(pid)


def _spent(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def run_direct(archive: Orthanc, study: Study, workdir: Path, timeout: float) -> MoveRun:
    """Move directly: movescu -> Orthanc -> storescp."""
    with Storescp(workdir / "direct-storescp", aet=DESTINATION_AE) as destination:
        archive.add_modality("dest", DESTINATION_AE, "127.0.0.1", destination.port)
        before = _cpu(archive.pid)
        seconds = _timed_move(archive.dicom_port, ARCHIVE_AE, study, destination, timeout)
        spent = _spent(before, _cpu(archive.pid))
    return MoveRun("movescu -> Orthanc -> storescp", len(study.sop_instance_uids), seconds, spent, spent)


def run_through_guard(
    archive: Orthanc,
    study: Study,
    workdir: Path,
    timeout: float,
    profile_dir: Path | None = None,
    profile_args: tuple[str, ...] = (),
    *,
    listener_process: bool = LISTENER_PROCESS,
) -> MoveRun:
    """Move through the guard: movescu -> guard (C-MOVE from Orthanc to itself, relayed) -> storescp."""
    with Storescp(workdir / "guard-storescp", aet=DESTINATION_AE) as destination:
        guard = GuardProcess(
            workdir / "guard",
            fresh=True,  # a new interpreter, as production starts it (not forked from the tests' preloaded server)
            archive_port=archive.dicom_port,
            archive_ae=ARCHIVE_AE,
            # A TOML array of tables; the test support types its overrides as tables only.
            destinations=[{"ae_title": DESTINATION_AE, "host": "127.0.0.1", "port": destination.port}],  # type: ignore[arg-type]
            node={"listener_process": listener_process},
            forward={"nice": DEFAULT_FORWARD_NICE},  # the guard's default, not the test support's
        )
        archive.add_modality("guard", GUARD_AE, "127.0.0.1", guard.port)
        try:
            guard.start(timeout=60)
            pid = guard.proc.pid if guard.proc is not None else None
            if pid is not None:
                settle(pid)
            profiler = None
            if profile_dir is not None and pid is not None:
                profiler = start_profiler(pid, profile_dir / f"guard-move-{int(time.time())}.txt", profile_args)
            guard_before, archive_before = _cpu(pid, tree=True), _cpu(archive.pid)
            seconds = _timed_move(guard.port, GUARD_AE, study, destination, timeout)
            if profiler is not None:
                stop_profiler(profiler)
            guard_spent, archive_spent = _spent(guard_before, _cpu(pid, tree=True)), _spent(archive_before, _cpu(archive.pid))
        except (MoveBenchError, TimeoutError, RuntimeError) as exc:
            msg = f"{exc}\nguard log ({guard.log_path}):\n{guard.log_tail(15)}"
            raise MoveBenchError(msg) from exc
        finally:
            guard.stop()
    return MoveRun("movescu -> guard -> storescp", len(study.sop_instance_uids), seconds, guard_spent, archive_spent)


def _ms(seconds: float | None, count: int) -> str:
    return "-" if seconds is None else f"{1000 * seconds / count:.2f}"


def render(direct: MoveRun, guard: MoveRun) -> str:
    """The table and the target line."""
    lines = [
        f"C-MOVE of one study ({direct.instances} instances, 512x512 16-bit CT) from Orthanc to a DCMTK storescp",
        f"{'path':32}  {'seconds':>8}  {'inst/s':>7}  {'mover CPU ms/inst':>17}  {'Orthanc CPU ms/inst':>19}",
    ]
    for run in (direct, guard):
        mover = "-" if run is direct else _ms(run.mover_cpu_seconds, run.instances)
        lines.append(
            f"{run.path:32}  {run.seconds:8.2f}  {run.per_second:7.1f}  {mover:>17}  {_ms(run.archive_cpu_seconds, run.instances):>19}"
        )
    ratio = guard.per_second / direct.per_second
    verdict = "met" if ratio >= TARGET_RATIO else "missed"
    lines.append(f"C-MOVE relay guard/direct {ratio:.2f} (target >= {TARGET_RATIO}: {verdict})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the study, load Orthanc, time both moves, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.move", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=200, help="instances in the study (default 200)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a move may take (default 600)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="record the guard with py-spy into DIR")
    add_listener_process_arg(parser)
    add_profile_arg(parser)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="guard-bench-move-"))
    try:
        study = make_study(root / "study", args.instances, rows=512, columns=512, patient_id="BENCHMOVE")
        archive = Orthanc(root / "orthanc", aet=ARCHIVE_AE)
        archive.add_modality("scu", SOURCE_AE, "127.0.0.1", 1)
        with archive:
            archive.upload(study.paths)
            direct = run_direct(archive, study, root, args.timeout)
            guard = run_through_guard(
                archive, study, root, args.timeout, args.profile, tuple(args.profile_arg), listener_process=args.listener_process
            )
        print(render(direct, guard))
    except (MoveBenchError, TimeoutError, OSError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
