"""Random interleavings of forwarding, commitment reports, C-FIND answers, losses, restarts and deletes on a real ledger.

Whatever happens, no instance is ``confirmed`` unless the archive said it holds it (a success
in a report of a transaction the guard opened for it, or a C-FIND listing it), no spool copy
is removed before its instance is confirmed, and no delete is permitted while the archive
lacks anything the source or the guard holds of the study.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select

from guard.config.settings import ConfirmMode
from guard.domain.decision import LiveEvidence, StudyFacts, decide_delete
from guard.ledger.confirmations import ConfirmPolicy, apply_find, apply_report, due_for_commitment, expire_outbound, open_outbound
from guard.ledger.db import migrate, open_engine
from guard.ledger.instances import ReceivedInstance, claim_pending, mark_forwarded, record_received, study_facts
from guard.ledger.ledger import Ledger
from guard.ledger.schema import instances
from guard.ledger.verification import apply_reverification, mark_spool_removed, removable_spool_copies
from guard.services.confirm.confirmer import exponential

STUDY = "1.2.3"
LEASE = timedelta(seconds=30)


class Clock:
    """A clock moved by the machine."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class ConfirmationMachine(RuleBasedStateMachine):
    """The archive is modelled as a set; what it has said is recorded next to the ledger."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.engine = open_engine(f"sqlite:///{Path(self.folder.name) / 'ledger.sqlite'}")
        migrate(self.engine)
        self.clock = Clock()
        self.ledger = Ledger(self.engine, self.clock)
        self.held: set[str] = set()
        self.source: set[str] = set()
        self.said_held: set[int] = set()
        self.transactions: dict[str, list[int]] = {}
        self.next_uid = 1

    @initialize(mode=st.sampled_from(list(ConfirmMode)), max_resends=st.integers(0, 3))
    def choose_policy(self, mode: ConfirmMode, max_resends: int) -> None:
        self.policy = ConfirmPolicy(mode=mode, max_resends=max_resends, backoff=exponential(1, 4))

    def teardown(self) -> None:
        self.engine.dispose()
        self.folder.cleanup()

    @rule()
    def receive(self) -> None:
        uid = f"1.2.3.4.{self.next_uid}"
        self.next_uid += 1
        self.source.add(uid)
        with self.ledger.transaction() as tx:
            record_received(
                tx,
                ReceivedInstance(
                    uid,
                    STUDY,
                    "1.2.3.1",
                    "1.2.840.10008.5.1.4.1.1.2",
                    "1.2.840.10008.1.2.1",
                    10,
                    "a" * 64,
                    f"{STUDY}/{uid}.dcm",
                    None,
                    "CT",
                    "PACS",
                    "127.0.0.1",
                ),
            )

    @rule(keep=st.booleans())
    def forward(self, keep: bool) -> None:
        """The archive answers Success; it may or may not keep the instance (a lying archive)."""
        for claim in claim_pending(self.ledger, "w", 3, LEASE):
            with self.ledger.transaction() as tx:
                mark_forwarded(tx, claim, "w", status=0, archive_ae="ARCHIVE")
            if keep:
                self.held.add(claim.sop_instance_uid)

    @rule()
    def request_commitment(self) -> None:
        for study_uid, refs in due_for_commitment(self.ledger, 5):
            uid = f"2.25.{self.next_uid}"
            self.next_uid += 1
            open_outbound(self.ledger, transaction_uid=uid, archive_ae="ARCHIVE", study_uid=study_uid, refs=refs, timeout=10)
            self.transactions[uid] = [r.instance_id for r in refs if r.instance_id is not None]

    def _uid_of(self, instance_id: int) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(instances.c.sop_instance_uid).where(instances.c.id == instance_id)).scalar_one())

    @rule(data=st.data(), truthful=st.booleans())
    def archive_reports(self, data: st.DataObject, truthful: bool) -> None:
        """A report for one of the guard's transactions (possibly again, possibly late); a liar reports everything."""
        if not self.transactions:
            return
        uid = data.draw(st.sampled_from(sorted(self.transactions)))
        ids = self.transactions[uid]
        uids = {i: self._uid_of(i) for i in ids}
        ok = [i for i in ids if not truthful or uids[i] in self.held]
        bad = [i for i in ids if i not in ok]
        self.said_held.update(ok)
        apply_report(
            self.ledger,
            transaction_uid=uid,
            reporter_ae="ARCHIVE",
            peer_address="127.0.0.1",
            successes=[uids[i] for i in ok],
            failures=[(uids[i], 0x0112) for i in bad],
            policy=self.policy,
        )

    @rule(success_uid=st.sampled_from(["1.2.3.4.1", "1.2.3.4.2"]))
    def unknown_transaction_report(self, success_uid: str) -> None:
        """A report for a Transaction UID the guard never opened changes nothing."""
        result = apply_report(
            self.ledger,
            transaction_uid="9.9.9",
            reporter_ae="ARCHIVE",
            peer_address=None,
            successes=[success_uid],
            failures=[],
            policy=self.policy,
        )
        assert not result.known

    @rule()
    def impostor_report(self) -> None:
        """A report naming a real transaction but coming from another AE changes nothing."""
        for uid, ids in self.transactions.items():
            result = apply_report(
                self.ledger,
                transaction_uid=uid,
                reporter_ae="EVIL",
                peer_address=None,
                successes=[self._uid_of(i) for i in ids],
                failures=[],
                policy=self.policy,
            )
            assert not result.known

    @rule()
    def archive_answers_find(self) -> None:
        with self.engine.connect() as conn:
            listed = {r.id for r in conn.execute(select(instances.c.id, instances.c.sop_instance_uid)) if r.sop_instance_uid in self.held}
        self.said_held.update(listed)
        apply_find(self.ledger, STUDY, set(self.held), self.policy)

    @rule(data=st.data())
    def archive_loses(self, data: st.DataObject) -> None:
        if self.held:
            self.held.discard(data.draw(st.sampled_from(sorted(self.held))))

    @rule(seconds=st.integers(1, 30))
    def time_passes(self, seconds: int) -> None:
        self.clock.now += timedelta(seconds=seconds)
        expire_outbound(self.ledger, self.policy.backoff)

    @rule()
    def restart(self) -> None:
        """A restart keeps only what the database holds."""
        self.engine.dispose()
        self.engine = open_engine(str(self.engine.url))
        migrate(self.engine)
        self.ledger = Ledger(self.engine, self.clock)

    @rule()
    def clean_spool(self) -> None:
        for instance_id, _ in removable_spool_copies(self.ledger, timedelta(0)):
            with self.engine.connect() as conn:
                state = conn.execute(select(instances.c.state).where(instances.c.id == instance_id)).scalar_one()
            assert state in {"confirmed", "superseded"}
            mark_spool_removed(self.ledger, instance_id)

    @rule()
    def reverify(self) -> None:
        """Re-verification: confirmed instances the archive no longer lists go back (spool) or raise an alert."""
        apply_reverification(self.ledger, STUDY, set(self.held), lambda _path: True)

    @rule()
    def source_gains_an_instance(self) -> None:
        """The PACS gets an instance of the study that it never sends to the guard."""
        self.source.add(f"1.2.3.9.{self.next_uid}")
        self.next_uid += 1

    @rule()
    def delete_request(self) -> None:
        """With the default checks, a permitted delete means the archive holds everything the source and the guard know of."""
        facts = StudyFacts(STUDY, study_facts(self.ledger, STUDY))
        live = LiveEvidence(archive_listed=set(self.held), source_listed=set(self.source))
        decision = decide_delete(facts, live, reverify=True, source_check=True)
        if decision.permitted:
            assert self.source | set(facts.states) <= self.held
            assert set(facts.states.values()) == {"confirmed"}

    @invariant()
    def confirmed_only_on_the_archives_word(self) -> None:
        with self.engine.connect() as conn:
            confirmed = set(conn.execute(select(instances.c.id).where(instances.c.state == "confirmed")).scalars())
        assert confirmed <= self.said_held

    @invariant()
    def spool_copies_kept_until_confirmed(self) -> None:
        with self.engine.connect() as conn:
            removed = conn.execute(select(instances.c.state).where(instances.c.spool_removed_at.is_not(None))).scalars()
            # A copy may be gone only for an instance that was confirmed (and may since have been found missing).
            assert set(removed) <= {"confirmed", "superseded", "missing-in-archive"}


ConfirmationMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestConfirmationInterleavings = ConfirmationMachine.TestCase
