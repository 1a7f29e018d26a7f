"""``guard audit``: query the audit log (table, JSON lines, CSV) and ``guard audit verify``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from guard.config.settings import Settings, load_settings
from guard.domain.errors import ConfigError
from guard.domain.states import AuditEvent, Outcome
from guard.domain.times import parse_utc
from guard.domain.uids import is_valid_uid
from guard.ledger.audit_query import AuditEntry, iter_audit
from guard.ledger.audit_verify import chain_anchor, count_records, verify_chain
from guard.ledger.chain import RECORD_FIELDS
from guard.ledger.db import open_ledger
from guard.ledger.ledger import Ledger
from guard.services.audit.retention import verify_export

audit_app = typer.Typer(help="Query the audit log; 'guard audit verify' checks its hash chain.", invoke_without_command=True)

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_USAGE = 2

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML configuration file (default: $GUARD_CONFIG).", envvar="GUARD_CONFIG")
]


class Format(StrEnum):
    """Output formats of ``guard audit``."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"


#: CSV columns, in order; ``detail`` is a JSON object in one cell.
CSV_COLUMNS = (*RECORD_FIELDS, "hash")


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[red]{message}[/red]", highlight=False)
    return typer.Exit(code)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise _fail(f"{option}: not an ISO 8601 date or time: {value!r}") from exc


def _summary(detail: dict[str, Any]) -> str:
    """A record's detail as short ``key=value`` pairs for the table."""
    parts = []
    for key, value in detail.items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else json.dumps(value) if isinstance(value, dict) else str(value)
        parts.append(f"{key}={text}")
    return "; ".join(parts)


def _table(records: Iterable[AuditEntry], title: str) -> Table:
    table = Table(title=title, show_lines=False, expand=False)
    for name, style in (("seq", "dim"), ("time (UTC)", None), ("event", "bold"), ("outcome", None), ("actor", None), ("instance", None)):
        table.add_column(name, style=style, no_wrap=name != "instance")
    table.add_column("details", overflow="fold")
    colours = {Outcome.SUCCESS.value: "green", Outcome.FAILURE.value: "red", Outcome.REFUSED.value: "yellow"}
    for r in records:
        when = r.at[:19].replace("T", " ")
        outcome = f"[{colours.get(r.outcome, 'white')}]{r.outcome}[/]"
        subject = r.sop_instance_uid or r.series_uid or ("" if r.study_uid is None else f"study {r.study_uid}")
        table.add_row(str(r.seq), when, r.event, outcome, r.actor or "", subject, _summary(r.detail))
    return table


def write_records(records: Iterator[AuditEntry], fmt: Format, title: str) -> int:
    """Write ``records`` to stdout in ``fmt``; returns how many were written."""
    count = 0
    if fmt is Format.JSON:
        for count, r in enumerate(records, 1):  # noqa: B007 - count is the result
            sys.stdout.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")
        return count
    if fmt is Format.CSV:
        writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for count, r in enumerate(records, 1):  # noqa: B007 - count is the result
            writer.writerow({**r.as_dict(), "detail": json.dumps(r.detail, ensure_ascii=False, sort_keys=True)})
        return count
    rows = list(records)
    out.print(_table(rows, title))
    return len(rows)


@audit_app.callback()
def audit(  # noqa: PLR0913, PLR0917 - one option per filter
    ctx: typer.Context,
    study: Annotated[str | None, typer.Option(help="Study Instance UID: the study's history, first receipt to last decision.")] = None,
    patient: Annotated[str | None, typer.Option(help="Patient ID.")] = None,
    event: Annotated[str | None, typer.Option(help="Event name, e.g. delete.refused.")] = None,
    outcome: Annotated[Outcome | None, typer.Option(help="Outcome.")] = None,
    ae: Annotated[str | None, typer.Option(help="Actor: AE title or token identity.")] = None,
    since: Annotated[str | None, typer.Option(help="From this ISO 8601 time (UTC when no zone), inclusive.")] = None,
    until: Annotated[str | None, typer.Option(help="Until this ISO 8601 time (UTC when no zone), inclusive.")] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many records; 0 for all.")] = 1000,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (readable), json (JSON lines) or csv.")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """Audit records, oldest first, matching every filter given."""
    if ctx.invoked_subcommand is not None:
        return
    if study is not None and not is_valid_uid(study):
        raise _fail(f"--study: not a valid Study Instance UID: {study!r}")
    if event is not None and event not in {e.value for e in AuditEvent}:
        raise _fail(f"--event: unknown event {event!r}; known: {', '.join(sorted(e.value for e in AuditEvent))}")
    filters: dict[str, Any] = {
        "study_uid": study,
        "patient_id": patient,
        "event": event,
        "outcome": outcome.value if outcome is not None else None,
        "actor": ae,
        "since": _time(since, "--since"),
        "until": _time(until, "--until"),
    }
    ledger = open_ledger(_settings(config))
    try:
        title = f"History of study {study}" if study else "Audit records"
        count = write_records(iter_audit(ledger, limit=limit or None, **filters), fmt, title)
    finally:
        ledger.dispose()
    if fmt is Format.TABLE:
        more = " (the limit; use --limit 0 for all)" if limit and count >= limit else ""
        err.print(f"{count} record(s){more}", highlight=False)


def _verify_exports(files: list[Path], ledger: Ledger) -> None:
    """Check retention export files, oldest first: each chain, their links, and the ledger's anchor."""
    previous: str | None = None
    for path in files:
        report, header = verify_export(path, expected_prev=previous)
        if report.broken is not None:
            out.print(f"[red]{path.name}: chain BROKEN at record {report.broken.seq}: {report.broken.message}[/red]", highlight=False)
            raise typer.Exit(EXIT_FAILED)
        out.print(f"{path.name}: {report.checked} record(s) verified ({header['first_seq']} to {header['last_seq']})", highlight=False)
        previous = report.last_hash
    anchor = chain_anchor(ledger)
    if previous is not None and anchor is not None and anchor[1] != previous:
        out.print(f"[red]the newest export file does not end where the ledger's chain starts (record {anchor[0]})[/red]")
        raise typer.Exit(EXIT_FAILED)


@audit_app.command("verify")
def verify(
    tail: Annotated[int | None, typer.Option(min=1, help="Check only the newest N records.")] = None,
    export: Annotated[
        list[Path] | None, typer.Option("--export", help="Retention export files (oldest first) to check with the ledger.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Walk the hash chain; exit 1 and name the first broken, missing or reordered record."""
    ledger = open_ledger(_settings(config))
    try:
        if export:
            _verify_exports(export, ledger)
        total = min(tail, count_records(ledger)) if tail else count_records(ledger)
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err, transient=True) as progress:
            task = progress.add_task("verifying the audit chain", total=total)
            report = verify_chain(ledger, tail=tail, progress=lambda n: progress.update(task, completed=n))
    finally:
        ledger.dispose()
    if report.broken is not None:
        out.print(f"[red]audit chain BROKEN at record {report.broken.seq}: {report.broken.message}[/red]", highlight=False)
        out.print(f"{report.checked - 1} record(s) before it verified.", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    span = f"records {report.first_seq} to {report.last_seq}" if report.checked else "no records"
    out.print(f"[green]audit chain intact[/green]: {report.checked} record(s) verified ({span})", highlight=False)
    out.print(f"head hash {report.last_hash}", highlight=False)
