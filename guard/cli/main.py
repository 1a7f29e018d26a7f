"""The ``guard`` command.

Exit codes: 0 success; 1 an operation failed (among them: the ledger cannot be reached, said
in one line on stderr); 2 invalid configuration or usage; 3 a delete was refused.
"""

from __future__ import annotations

import getpass
import json
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from guard import runtime
from guard.cli.audit import audit_app
from guard.cli.pull import PullRequestError, choose_targets, run_pull
from guard.config.reference import render_reference
from guard.config.settings import Settings, TokenScope, load_settings, redacted
from guard.domain.errors import ConfigError, GuardError, LedgerUnavailableError
from guard.domain.times import parse_utc
from guard.domain.tokens import token_hash
from guard.domain.uids import is_valid_uid
from guard.ledger.db import open_ledger
from guard.ledger.instances import Overview, overview, requeue_dead_letters
from guard.ledger.nodes import NodeStatus, list_nodes
from guard.ledger.reconcile import count_studies, select_studies
from guard.ledger.study_report import StudyReport, study_report
from guard.services.confirm.reconcile import reconcile
from guard.services.delete.gate import DeleteGate
from guard.spool import Spool
from guard.web.backends import make_backend

app = typer.Typer(help="guard: no image is deleted before the archive has proven it holds it.", no_args_is_help=True, add_completion=False)
config_app = typer.Typer(help="Configuration commands.", no_args_is_help=True)
app.add_typer(config_app, name="config")
token_app = typer.Typer(help="Admin API tokens: make one, or hash one for [[http.tokens]].", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_REFUSED = 3

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML configuration file (default: $GUARD_CONFIG).", envvar="GUARD_CONFIG")
]


def _settings(config: Path | None) -> Settings:
    """Load the configuration or exit 2 with the problem."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from exc
    runtime.configure_logging(stream=sys.stderr, redact_patient_data=settings.log.redact_patient_data)
    return settings


def _study_uid(value: str) -> str:
    if not is_valid_uid(value):
        err.print(f"[red]not a valid Study Instance UID: {value!r}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG)
    return value


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the guard until SIGTERM or SIGINT, then stop cleanly."""
    from guard.app.serve_main import run  # noqa: PLC0415 - guard.entry calls it directly; this is for the help and for tests

    raise typer.Exit(run(config))


def _start_or_exit(start: Callable[[], None], stop: Callable[[], None], what: str) -> None:
    """Run ``start``; if it fails, say why in one line, undo with ``stop`` and exit 1."""
    try:
        start()
    except (GuardError, OSError) as exc:
        err.print(f"[red]{what}: {exc}[/red]", highlight=False)
        stop()
        raise typer.Exit(EXIT_FAILED) from exc


@app.command(hidden=True)
def listener(
    config: ConfigOption = None,
    channel_fd: Annotated[int, typer.Option("--channel-fd", help="Datagram socket inherited from the main process.")] = -1,
) -> None:
    """Run only the DICOM listener: started by `guard serve` when node.listener_process is on, never by hand.

    `guard serve` starts it as `python -m guard listener`, which goes to `guard.app.listener_main`
    without this interface; this command is the same process started through it.
    """
    from guard.app.listener_main import run  # noqa: PLC0415 - only the listener process needs it

    raise typer.Exit(run(config, channel_fd))


@app.command()
def status(
    study_uid: Annotated[str | None, typer.Argument(help="Study Instance UID; without it, an overview of the ledger.")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,  # noqa: FBT002 - a CLI flag
) -> None:
    """Show what the guard knows of one study (instances per state, dead letters), or of everything."""
    settings = _settings(config)
    ledger = open_ledger(settings)
    try:
        if study_uid is None:
            _print_overview(overview(ledger), list_nodes(ledger, timedelta(seconds=settings.node.heartbeat_seconds)), as_json=as_json)
            return
        report = study_report(ledger, _study_uid(study_uid), quiet=timedelta(seconds=settings.confirm.batch_wait))
    finally:
        ledger.dispose()
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    _print_report(report)


def _print_report(report: StudyReport) -> None:
    if not report.known:
        out.print(f"Study {report.study_uid} is unknown to this guard (no instance received).")
        return
    out.print(_counts_table(f"Study {report.study_uid}: {report.instances} instances, {report.state.value}", report.counts))
    if report.dead_letters:
        dead = Table(title="Dead letters (re-queue with: guard requeue STUDY_UID)")
        for col in ("SOP Instance UID", "status", "attempts", "reason"):
            dead.add_column(col)
        for item in report.dead_letters:
            dead.add_row(item.sop_instance_uid, item.status or "-", str(item.attempts), item.reason or "")
        out.print(dead)
    if report.pending_commitments:
        table = Table(title="Storage Commitment requests awaiting the archive's report")
        for col in ("Transaction UID", "references", "asked at", "deadline"):
            table.add_column(col)
        for txn in report.pending_commitments:
            table.add_row(txn.transaction_uid, str(txn.references), txn.created_at, txn.deadline_at)
        out.print(table)


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("instances", justify="right")
    for state_name, count in sorted(counts.items()):
        table.add_row(state_name, str(count))
    return table


def _print_overview(summary: Overview, nodes: list[NodeStatus], *, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps({**asdict(summary), "nodes": [asdict(n) for n in nodes]}, default=str))
        return
    out.print(_counts_table(f"All instances: {sum(summary.counts.values())}", summary.counts))
    table = Table(title="Nodes")
    for col in ("node", "state", "ready", "last seen (UTC)", "queue", "unconfirmed", "version"):
        table.add_column(col)
    for node in nodes:
        table.add_row(
            node.node,
            node.state,
            "yes" if node.ready else "no",
            node.last_seen_at.isoformat(),
            str(node.queue),
            str(node.unconfirmed),
            node.version,
        )
    out.print(table)
    recent = Table(title="Most recent studies")
    for col in ("Study Instance UID", "Patient ID", "last received (UTC)"):
        recent.add_column(col)
    for item in summary.recent_studies:
        recent.add_row(item.study_uid, item.patient_id or "", item.last_received_at)
    out.print(recent)


@app.command()
def requeue(
    study_uid: Annotated[str | None, typer.Argument(help="Study whose dead letters go back to forwarding.")] = None,
    all_studies: Annotated[bool, typer.Option("--all", help="Re-queue every dead letter.")] = False,  # noqa: FBT002 - a CLI flag
    config: ConfigOption = None,
) -> None:
    """Put dead-lettered instances back into forwarding (after fixing the cause)."""
    if (study_uid is None) == (not all_studies):
        err.print("[red]give a STUDY_UID or --all[/red]")
        raise typer.Exit(EXIT_CONFIG)
    settings = _settings(config)
    ledger = open_ledger(settings)
    try:
        count = requeue_dead_letters(ledger, study_uid=_study_uid(study_uid) if study_uid else None, actor="cli")
    finally:
        ledger.dispose()
    out.print(f"{count} instance(s) re-queued for forwarding.")


@app.command()
def delete(
    study_uid: str,
    reason: Annotated[str | None, typer.Option(help="Why the study should be deleted (audited).")] = None,
    config: ConfigOption = None,
) -> None:
    """Ask the delete gate: exit 0 when permitted (and carried out by the backend), 3 when refused."""
    settings = _settings(config)
    ledger = open_ledger(settings)
    try:
        gate = DeleteGate(settings, ledger, make_backend(settings.delete))
        outcome = gate.request(_study_uid(study_uid), channel="cli", requester=f"cli:{getpass.getuser()}", peer_address=None, reason=reason)
    finally:
        ledger.dispose()
    decision = outcome.decision
    if decision.permitted and outcome.carried_out:
        out.print(f"[green]permitted[/green]: {decision.sentence}", highlight=False)
        return
    if decision.permitted:
        err.print(f"[red]permitted, but the {settings.delete.backend.value} backend failed: {outcome.backend_error}[/red]", highlight=False)
        raise typer.Exit(EXIT_FAILED)
    out.print(f"[red]refused[/red]: {decision.sentence}", highlight=False)
    for code in decision.reasons:
        out.print(f"  - {code.value}")
    for peer in ("archive", "source", "bytes"):  # why a peer could not be asked, as the decision's evidence says
        if f"{peer}_error" in decision.evidence:
            out.print(f"    {peer}: {decision.evidence[f'{peer}_error']}", highlight=False, markup=False)
    raise typer.Exit(EXIT_REFUSED)


@app.command()
def health(
    config: ConfigOption = None,
    ready: Annotated[bool, typer.Option("--ready", help="Check readiness (ledger, spool, workers), not only liveness.")] = False,  # noqa: FBT002 - a CLI flag
) -> None:
    """Ask the running guard's admin API whether it is healthy; exit 0 if so, 1 if not (container health checks)."""
    settings = _settings(config)
    if not settings.http.port:
        err.print("[red]the admin API is disabled (http.port = 0): nothing to ask[/red]")
        raise typer.Exit(EXIT_FAILED)
    host = "127.0.0.1" if settings.http.bind in {"0.0.0.0", ""} else settings.http.bind  # noqa: S104 - comparing, not binding
    scheme = "https" if settings.http.certificate else "http"
    url = f"{scheme}://{host}:{settings.http.port}/{'readyz' if ready else 'healthz'}"
    try:
        # Its own process on this machine: liveness is the question, not the certificate's name.
        answer = httpx.get(url, timeout=5, verify=False)  # noqa: S501 - see above
    except httpx.HTTPError as exc:
        err.print(f"[red]{url}: {exc}[/red]", highlight=False)
        raise typer.Exit(EXIT_FAILED) from exc
    out.print(f"{url}: {answer.status_code} {answer.text.strip()}", highlight=False)
    if answer.status_code != 200:
        raise typer.Exit(EXIT_FAILED)


@app.command("reconcile")
def reconcile_command(
    study_uids: Annotated[list[str] | None, typer.Argument(help="Studies to reconcile.")] = None,
    since: Annotated[str | None, typer.Option(help="Studies received since this ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="Studies received until this ISO time.")] = None,
    all_studies: Annotated[bool, typer.Option("--all", help="Every study in the ledger.")] = False,  # noqa: FBT002 - a CLI flag
    config: ConfigOption = None,
) -> None:
    """Compare the ledger with the archive (C-FIND) and re-queue what the archive lacks."""
    if not study_uids and since is None and until is None and not all_studies:
        err.print("[red]give STUDY_UIDs, --since/--until, or --all[/red]")
        raise typer.Exit(EXIT_CONFIG)
    settings = _settings(config)
    ledger = open_ledger(settings)
    try:
        targets: list[str] | None = None
        lower = upper = None
        if study_uids:
            targets = [_study_uid(u) for u in study_uids]
            total = len(study_uids)
        else:
            lower, upper = _iso(since, "--since"), _iso(until, "--until")
            total = count_studies(ledger, since=lower, until=upper)
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err, transient=False) as progress:
            task = progress.add_task("reconciling studies", total=total)
            studies = targets if targets is not None else select_studies(ledger, since=lower, until=upper)
            summary = reconcile(settings, ledger, Spool(settings.spool_dir), studies, on_study=lambda _uid: progress.advance(task))
    finally:
        ledger.dispose()
    table = Table(title="Reconcile summary")
    for col in ("studies", "instances checked", "re-queued from spool", "lost (no spool copy)", "archive errors"):
        table.add_column(col, justify="right")
    table.add_row(str(summary.studies), str(summary.instances), str(summary.requeued), str(summary.lost), str(len(summary.errors)))
    out.print(table)
    for study_uid, error in list(summary.errors.items())[:10]:
        out.print(f"[red]{study_uid}: {error}[/red]", highlight=False)
    if summary.errors or summary.lost:
        raise typer.Exit(EXIT_FAILED)


def _iso(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(value)
    except ValueError as exc:
        err.print(f"[red]{option}: not an ISO date or time: {value!r}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from exc


@app.command()
def pull(
    study_uids: Annotated[list[str] | None, typer.Argument(help="Study Instance UIDs to pull.")] = None,
    from_file: Annotated[Path | None, typer.Option("--from-file", help="File of Study Instance UIDs, one per line.")] = None,
    date_from: Annotated[str | None, typer.Option("--date-from", help="Studies from this Study Date (YYYY-MM-DD).")] = None,
    date_to: Annotated[str | None, typer.Option("--date-to", help="Studies up to this Study Date (YYYY-MM-DD).")] = None,
    modality: Annotated[str | None, typer.Option(help="Studies with this modality (Modalities in Study).")] = None,
    source: Annotated[str | None, typer.Option(help="AE title of the source (default: the only source with a host).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=16, help="Studies moved at once.")] = 2,
    config: ConfigOption = None,
) -> None:
    """Bring studies from a source into the guard by C-MOVE; they are then forwarded and confirmed. Exit 1 if any failed."""
    settings = _settings(config)
    try:
        plan = choose_targets(
            settings,
            source_ae=source,
            study_uids=study_uids or [],
            from_file=from_file,
            date_from=date_from,
            date_to=date_to,
            modality=modality,
        )
    except (PullRequestError, ConfigError) as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        raise typer.Exit(EXIT_CONFIG) from exc
    ledger = open_ledger(settings)
    try:
        summary = run_pull(settings, ledger, out, err, plan, concurrency=concurrency)
    finally:
        ledger.dispose()
    if not summary.ok:
        raise typer.Exit(EXIT_FAILED)


@token_app.command("hash")
def token_hash_command() -> None:
    """Read a token on standard input (not the command line, which shell history keeps) and print its SHA-256."""
    token = sys.stdin.readline().strip() if not sys.stdin.isatty() else typer.prompt("token", hide_input=True).strip()
    if not token:
        err.print("[red]empty token[/red]")
        raise typer.Exit(EXIT_CONFIG)
    out.print(token_hash(token), highlight=False)


@token_app.command("new")
def token_new(
    identity: Annotated[str, typer.Option(help="Who will hold the token (the actor in the audit log).")],
    scope: Annotated[list[TokenScope], typer.Option(help="read and/or delete; repeat for both.")],
) -> None:
    """Make a random token; print it once (give it to its holder) and the [[http.tokens]] entry holding only its hash."""
    token = secrets.token_urlsafe(32)
    scopes = ", ".join(f'"{s.value}"' for s in dict.fromkeys(scope))
    err.print("token (shown once; store it where its holder keeps secrets):", highlight=False)
    out.print(token, highlight=False)
    err.print("configuration entry:", highlight=False)
    out.print(
        f'[[http.tokens]]\nidentity = "{identity}"\nscopes = [{scopes}]\nsha256 = "{token_hash(token)}"', highlight=False, markup=False
    )


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration and print the effective values, secrets redacted."""
    settings = _settings(config)
    out.print_json(json.dumps(redacted(settings)))
    for unknown in settings.unknown_environment:
        hint = f"; did you mean {unknown.suggestion}?" if unknown.suggestion else ""
        err.print(f"[yellow]warning: unknown environment variable {unknown.name} ignored{hint}[/yellow]", highlight=False, soft_wrap=True)
    if settings.archive.builtin:
        err.print(
            "[yellow]warning: no archive.host configured; the built-in reference archive"
            " (sandbox, not for production) will be used[/yellow]"
        )


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown), generated from the settings model."""
    sys.stdout.write(render_reference())


@app.command()
def refarchive(
    directory: Annotated[Path, typer.Option("--dir", help="Folder for received instances.")] = Path("var/reference-archive"),
    port: Annotated[int, typer.Option(help="DICOM port.")] = 11113,
    ae_title: Annotated[str, typer.Option("--ae-title", help="AE title.")] = "ARCHIVE",
    bind: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
) -> None:
    """Run the reference archive alone (sandbox and tests only; not an archive for production)."""
    runtime.configure_logging()
    from guard.sandbox.archive import ReferenceArchive  # noqa: PLC0415 - only this command runs the sandbox archive

    archive = ReferenceArchive(directory, ae_title=ae_title, bind=bind, port=port).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    out.print(f"reference archive {ae_title} listening on {bind}:{archive.port}, storing in {directory}")
    while not stop.wait(1.0):
        pass
    archive.stop()


def main() -> None:
    """Entry point of the console script."""
    # Audit lines written by a command go to stderr; ``guard serve`` switches them to stdout.
    runtime.configure_logging(stream=sys.stderr)
    try:
        app()
    except LedgerUnavailableError as exc:
        # One line a person can act on: the first line of the driver's words, not the SQL or the link after it.
        cause = (str(exc.__cause__ or exc).strip().splitlines() or [str(exc)])[0]
        message = f"guard: the ledger is unavailable, nothing was read or changed: {cause}"
        err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except GuardError as exc:
        err.print(f"[red]{exc}[/red]", highlight=False)
        sys.exit(EXIT_FAILED)
