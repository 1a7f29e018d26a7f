"""Random histories of receipts, confirmations, damage in the archive, byte re-verifications and deletes on a real ledger.

The ledger is SQLite and PostgreSQL (the ``ledger_engine`` fixture), emptied before each history.

The archive is modelled as SOP Instance UID -> the digest of the copy it holds; the guard's
byte verifier (its real policies and ledger rules) asks it through the ``ByteRetriever``
interface. Whatever happens, no delete is permitted while an instance the sample looked at has
other bytes in the archive, nor while the ledger's last check of an instance did not match.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import Engine

from guard.config.settings import ConfirmMode, Settings
from guard.config.verify import ConfirmationCheck, VerifySettings
from guard.domain.decision import LiveEvidence, Reason, StudyFacts, decide_delete
from guard.ledger.byte_checks import flagged_in_study
from guard.ledger.confirmations import ConfirmPolicy, apply_find
from guard.ledger.instances import ReceivedInstance, claim_pending, mark_forwarded, record_received, study_facts
from guard.ledger.ledger import Ledger
from guard.ledger.schema import metadata
from guard.services.confirm.confirmer import exponential
from guard.services.verify.verifier import ByteVerifier
from guard.spool import Spool
from tests.integration.test_confirmation_properties import LEASE, STUDY, Clock

SERIES = ("1.2.3.1", "1.2.3.2")


class ModelArchive:
    """The archive as a model: the digest of each copy it holds (the ``ByteRetriever`` interface)."""

    method = "model"

    def __init__(self) -> None:
        self.copies: dict[str, str] = {}

    def digests(self, study_uid: str, series_uid: str, sop_instance_uids: Sequence[str]) -> Mapping[str, str]:  # noqa: ARG002 - the protocol
        return {uid: self.copies[uid] for uid in sop_instance_uids if uid in self.copies}


def _digest(uid: str) -> str:
    return hashlib.sha256(uid.encode()).hexdigest()


class BytesMachine(RuleBasedStateMachine):
    """Receipts, forwarding with C-FIND confirmation, damage, byte checks by every policy, and delete decisions."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        root = Path(self.folder.name)
        self.engine = engine
        with engine.begin() as conn:  # every history starts from an empty (migrated) ledger
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())
        self.clock = Clock()
        self.ledger = Ledger(self.engine, self.clock)
        self.spool = Spool(root / "spool")
        self.spool.prepare()
        self.archive = ModelArchive()
        self.next_uid = 1
        self.policy = ConfirmPolicy(mode=ConfirmMode.FIND, max_resends=None, backoff=exponential(1, 4))

    @initialize(at_confirmation=st.sampled_from(list(ConfirmationCheck)), delete_sample=st.integers(1, 3), keep_copies=st.booleans())
    def choose_policy(self, at_confirmation: ConfirmationCheck, delete_sample: int, keep_copies: bool) -> None:
        verify = VerifySettings(at_confirmation=at_confirmation, delete_sample=delete_sample, reverify_days=1)
        self.keep_copies = keep_copies
        self.verifier = ByteVerifier(Settings(verify=verify), self.ledger, self.spool, self.archive)

    def teardown(self) -> None:
        self.folder.cleanup()

    @rule(series=st.sampled_from(SERIES))
    def receive(self, series: str) -> None:
        uid = f"1.2.3.4.{self.next_uid}"
        self.next_uid += 1
        relative = f"{STUDY}/{uid}.dcm"
        if self.keep_copies:
            (self.spool.root / STUDY).mkdir(exist_ok=True)
            self.spool.path_of(relative).write_bytes(b"")
        with self.ledger.transaction() as tx:
            item = ReceivedInstance(
                uid,
                STUDY,
                series,
                "1.2.840.10008.5.1.4.1.1.2",
                "1.2.840.10008.1.2.1",
                10,
                _digest(uid),
                relative,
                None,
                "CT",
                "PACS",
                "::1",
            )
            record_received(tx, item)

    @rule()
    def forward_and_confirm(self) -> None:
        """The archive keeps an intact copy of what it is sent, and lists it when asked."""
        for claim in claim_pending(self.ledger, "w", 5, LEASE):
            with self.ledger.transaction() as tx:
                mark_forwarded(tx, claim, "w", status=0, archive_ae="ARCHIVE")
            self.archive.copies[claim.sop_instance_uid] = _digest(claim.sop_instance_uid)
        apply_find(self.ledger, STUDY, set(self.archive.copies), self.policy, lambda p: self.spool.path_of(p).is_file())

    @rule(data=st.data(), lose=st.booleans())
    def archive_damages(self, data: st.DataObject, lose: bool) -> None:
        """The archive's storage damages a copy (other bytes) or loses the file while still listing it."""
        if not self.archive.copies:
            return
        uid = data.draw(st.sampled_from(sorted(self.archive.copies)))
        if lose:
            del self.archive.copies[uid]
        else:
            self.archive.copies[uid] = "0" * 64

    @rule()
    def confirmation_checks(self) -> None:
        self.verifier.confirmation_round()

    @rule(days=st.floats(0.1, 2))
    def rolling_checks(self, days: float) -> None:
        self.clock.now += timedelta(days=days)
        self.verifier.rolling_round()

    @rule()
    def delete_requested(self) -> None:
        """The gate's decision: the ledger's facts, the live listing, the delete-time byte sample."""
        states = study_facts(self.ledger, STUDY)
        if not states:
            return
        sample = self.verifier.at_delete(STUDY)
        facts = StudyFacts(STUDY, study_facts(self.ledger, STUDY), bytes_differ=flagged_in_study(self.ledger, STUDY))
        live = LiveEvidence(
            archive_listed=set(states), bytes_checked=sample.checked, bytes_differ=sample.not_matching, bytes_error=sample.error
        )
        decision = decide_delete(facts, live, reverify=True, source_check=False, bytes_sample=True)
        damaged = {uid for uid in states if self.archive.copies.get(uid) != _digest(uid)}
        if (sample.checked or set()) & damaged:
            assert not decision.permitted
            assert Reason.BYTES_DIFFER in decision.reasons
        if facts.bytes_differ:
            assert not decision.permitted

    @invariant()
    def flagged_instances_belong_to_the_study(self) -> None:
        """The ledger flags only instances it holds for the study (the facts a decision reads)."""
        flagged = flagged_in_study(self.ledger, STUDY)
        states = study_facts(self.ledger, STUDY)
        assert flagged <= set(states)


def test_byte_histories(ledger_engine: Engine) -> None:
    """No history permits a delete while a sampled instance's bytes differ in the archive, or while the last check did not match."""
    run_state_machine_as_test(
        lambda: BytesMachine(ledger_engine),
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    )
