"""Audit retention on real SQLite and PostgreSQL: older records exported, removed, and the chain still verifiable."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, func, select

from guard.config.settings import Settings
from guard.domain.states import AuditEvent
from guard.ledger.audit_verify import chain_anchor, verify_chain
from guard.ledger.ledger import Ledger
from guard.ledger.schema import audit_log
from guard.services.audit.retention import apply_retention, verify_export


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _settings(tmp_path: Path, url: str, days: float = 30) -> Settings:
    return Settings.model_validate(
        {"node": {"data_dir": str(tmp_path / "data")}, "ledger": {"url": url}, "audit": {"retention_days": days}}
    )


def _fill(ledger: Ledger, clock: Clock, days: int, per_day: int) -> None:
    for _ in range(days):
        for i in range(per_day):
            ledger.audit(AuditEvent.INSTANCE_RECEIVED, actor="PACS", study_uid=f"1.2.{i}", detail={"day": clock.now.isoformat()})
        clock.now += timedelta(days=1)


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_retention_is_off_by_default(ledger_engine: Engine, tmp_path: Path) -> None:
    """Without a retention period nothing is ever removed."""
    clock = Clock()
    ledger = Ledger(ledger_engine, clock)
    _fill(ledger, clock, days=3, per_day=2)
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)}, "ledger": {"url": _url(ledger_engine)}})
    clock.now += timedelta(days=3650)
    assert apply_retention(settings, ledger) is None
    with ledger_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 6


def test_old_records_are_exported_then_removed_and_the_chain_verifies_across_cuts(ledger_engine: Engine, tmp_path: Path) -> None:
    """Two cuts: each file holds exactly the removed records; files, anchor and ledger chain link up; the CLI agrees."""
    clock = Clock()
    ledger = Ledger(ledger_engine, clock)
    settings = _settings(tmp_path, _url(ledger_engine))
    _fill(ledger, clock, days=40, per_day=3)  # records on days 0..39; now = day 40
    first = apply_retention(settings, ledger)  # keeps the last 30 days: days 10..39
    assert first is not None
    assert (first.first_seq, first.last_seq, first.records) == (1, 30, 30)
    with gzip.open(first.file, "rt") as lines:
        header = json.loads(next(lines))
        removed = [json.loads(line) for line in lines]
    assert header["prev_hash"] == "0" * 64
    assert [r["seq"] for r in removed] == list(range(1, 31))
    with ledger_engine.connect() as conn:
        assert conn.execute(select(func.min(audit_log.c.seq))).scalar() == 31
    assert chain_anchor(ledger) == (30, first.last_hash)
    assert verify_chain(ledger).ok
    with ledger_engine.connect() as conn:
        events = list(conn.execute(select(audit_log.c.event)).scalars())
    assert events.count(AuditEvent.AUDIT_EXPORTED.value) == 1

    assert apply_retention(settings, ledger) is None  # nothing more is due today
    clock.now += timedelta(days=5)
    second = apply_retention(settings, ledger)
    assert second is not None
    assert (second.first_seq, second.last_seq) == (31, 45)
    report, _ = verify_export(second.file, expected_prev=first.last_hash)
    assert report.ok
    assert verify_chain(ledger).ok

    config = tmp_path / "guard.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "data"}"\n[ledger]\nurl = "{_url(ledger_engine)}"\n')
    cli = [sys.executable, "-m", "guard", "audit", "verify", "--config", str(config)]
    ok = subprocess.run([*cli, "--export", str(first.file), "--export", str(second.file)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong_order = subprocess.run(
        [*cli, "--export", str(second.file), "--export", str(first.file)], capture_output=True, text=True, check=False
    )
    assert wrong_order.returncode == 1


def test_a_tampered_export_file_is_found(ledger_engine: Engine, tmp_path: Path) -> None:
    """Changing one record inside an export file breaks its chain at that record."""
    clock = Clock()
    ledger = Ledger(ledger_engine, clock)
    _fill(ledger, clock, days=40, per_day=1)
    result = apply_retention(_settings(tmp_path, _url(ledger_engine)), ledger)
    assert result is not None
    with gzip.open(result.file, "rt") as lines:
        content = list(lines)
    record = json.loads(content[5])
    record["actor"] = "MALLORY"
    content[5] = json.dumps(record) + "\n"
    with gzip.open(result.file, "wt") as out:
        out.writelines(content)
    report, _ = verify_export(result.file)
    assert report.broken is not None
    assert report.broken.seq == record["seq"]
