"""Pure rules of byte verification: the exact digest equals the spool's receive digest, sampling, and the decision."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from guard.domain.comparison import exact_digest
from guard.domain.decision import LiveEvidence, Reason, StudyFacts, decide_delete
from guard.domain.sampling import sample_per_series, spread
from guard.spool import Spool
from tests.support.datasets import make_study

UIDS = [f"1.2.3.{n}" for n in range(6)]


def test_exact_digest_is_the_spool_receive_digest_whatever_the_chunks(tmp_path: Path) -> None:
    """The retrieved copy is digested by the receive rule (file meta excluded) in any chunking."""
    study = make_study(tmp_path / "study", 1)
    source = study.paths[0]
    data = source.read_bytes()
    spool = Spool(tmp_path / "spool")
    spool.prepare()
    temp = spool.incoming / "copy.dcm"
    temp.write_bytes(data)
    received = spool.place(temp, study.study_uid, study.sop_instance_uids[0]).sha256
    for size in (1, 7, 143, 144, 145, 4096, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert received == exact_digest(chunks), size


def test_sample_per_series_takes_the_count_and_the_flagged() -> None:
    """One per series at random, plus every flagged instance; -1 takes all."""
    series = {"s1": ["a", "b", "c"], "s2": ["d"], "s3": []}
    chosen = sample_per_series(series, 1, always=["c"], rng=random.Random(1))
    assert set(chosen) == {"s1", "s2"}
    assert "c" in chosen["s1"]
    assert chosen["s2"] == ["d"]
    assert sample_per_series(series, -1) == {"s1": ["a", "b", "c"], "s2": ["d"]}


def test_spread_is_a_fraction_fixed_by_the_uid() -> None:
    """The first rolling re-check falls at a fixed place in the window."""
    assert spread("1.2.3") == spread("1.2.3")
    assert all(0 <= spread(uid) < 1 for uid in UIDS)


def test_bytes_differ_and_unretrievable_sample_refuse() -> None:
    """A sampled instance that differs refuses with bytes-differ; no retrieve at all refuses with archive-unreachable."""
    facts = StudyFacts("1.2.3", {"1.2.3.1": "confirmed"})
    listed = LiveEvidence(archive_listed={"1.2.3.1"}, bytes_checked={"1.2.3.1"}, bytes_differ=frozenset({"1.2.3.1"}))
    decision = decide_delete(facts, listed, reverify=True, source_check=False, bytes_sample=True)
    assert decision.reasons == [Reason.BYTES_DIFFER]
    unreachable = LiveEvidence(archive_listed={"1.2.3.1"}, bytes_error="aborted")
    assert decide_delete(facts, unreachable, reverify=True, source_check=False, bytes_sample=True).reasons == [Reason.ARCHIVE_UNREACHABLE]
    matched = LiveEvidence(archive_listed={"1.2.3.1"}, bytes_checked={"1.2.3.1"})
    assert decide_delete(facts, matched, reverify=True, source_check=False, bytes_sample=True).permitted


@given(
    st.dictionaries(st.sampled_from(UIDS), st.sampled_from(["confirmed", "received", "forwarded"]), min_size=1, max_size=6),
    st.sets(st.sampled_from(UIDS)),
    st.sets(st.sampled_from(UIDS), min_size=1),
    st.booleans(),
)
def test_never_permitted_while_bytes_differ(states: dict[str, str], flagged: set[str], differ: set[str], sample: bool) -> None:
    """Whatever else holds, an instance whose bytes differ (now, or at its last check) never lets a delete through."""
    uids = set(states)
    facts = StudyFacts("1.2.3", states, bytes_differ=frozenset(flagged & uids))
    live = LiveEvidence(archive_listed=uids, bytes_checked=uids | differ, bytes_differ=frozenset(differ if sample else set()))
    decision = decide_delete(facts, live, reverify=True, source_check=False, bytes_sample=sample)
    if (flagged & uids) or sample:
        assert not decision.permitted
        assert Reason.BYTES_DIFFER in decision.reasons
