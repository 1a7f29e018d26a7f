from hypothesis import given
from hypothesis import strategies as st

from guard.domain.decision import LiveEvidence, Reason, StudyFacts, decide_delete

STATES = ["received", "failed", "forwarded", "confirmed", "missing-in-archive", "dead-lettered", "superseded"]
UIDS = [f"1.2.3.{n}" for n in range(6)]


def _facts(states: dict[str, str]) -> StudyFacts:
    return StudyFacts("1.2.3", states)


def test_all_confirmed_and_listed_everywhere_is_permitted() -> None:
    """Every instance confirmed, listed by the archive, and nothing else at the source: permitted."""
    uids = set(UIDS[:3])
    decision = decide_delete(
        _facts(dict.fromkeys(uids, "confirmed")), LiveEvidence(archive_listed=uids, source_listed=uids), reverify=True, source_check=True
    )
    assert decision.permitted
    assert decision.reasons == []
    assert decision.label == "permitted"


def test_each_reason() -> None:
    """Each failing check refuses with its own reason."""
    ok = {"1.2.3.1": "confirmed"}
    both = {"reverify": True, "source_check": True}
    cases = [
        (_facts({}), LiveEvidence(archive_listed=set(), source_listed=set()), Reason.UNKNOWN_STUDY),
        (_facts({"1.2.3.1": "forwarded"}), LiveEvidence(archive_listed={"1.2.3.1"}, source_listed={"1.2.3.1"}), Reason.UNCONFIRMED),
        (_facts({"1.2.3.1": "dead-lettered"}), LiveEvidence(archive_listed=set(), source_listed={"1.2.3.1"}), Reason.DEAD_LETTERED),
        (_facts(ok), LiveEvidence(archive_listed=set(), source_listed={"1.2.3.1"}), Reason.MISSING_IN_ARCHIVE),
        (_facts(ok), LiveEvidence(archive_error="timeout", source_listed={"1.2.3.1"}), Reason.ARCHIVE_UNREACHABLE),
        (_facts(ok), LiveEvidence(archive_listed={"1.2.3.1"}, source_error="refused"), Reason.SOURCE_UNREACHABLE),
        (_facts(ok), LiveEvidence(archive_listed={"1.2.3.1", "1.2.3.2"}, source_listed={"1.2.3.1", "1.2.3.2"}), Reason.UNKNOWN_TO_GUARD),
    ]
    for facts, live, reason in cases:
        decision = decide_delete(facts, live, **both)
        assert not decision.permitted
        assert reason in decision.reasons, (reason, decision)
        assert decision.sentence.startswith("Refused: ")


def test_checks_that_are_off_are_not_needed() -> None:
    """With reverify and source_check off, the ledger's confirmation alone decides."""
    decision = decide_delete(_facts({"1.2.3.1": "confirmed"}), LiveEvidence(), reverify=False, source_check=False)
    assert decision.permitted


@given(
    st.dictionaries(st.sampled_from(UIDS), st.sampled_from(STATES), max_size=6),
    st.one_of(st.none(), st.sets(st.sampled_from(UIDS))),
    st.one_of(st.none(), st.sets(st.sampled_from(UIDS))),
    st.booleans(),
    st.booleans(),
)
def test_never_permitted_without_a_complete_confirmed_copy(
    states: dict[str, str], archive: set[str] | None, source: set[str] | None, reverify: bool, source_check: bool
) -> None:
    """Whatever the facts and evidence, a permit implies every known (and source-listed) instance confirmed and listed by the archive."""
    decision = decide_delete(
        _facts(states), LiveEvidence(archive_listed=archive, source_listed=source), reverify=reverify, source_check=source_check
    )
    if decision.permitted:
        assert states
        assert set(states.values()) == {"confirmed"}
        if source_check:
            assert source is not None
            assert source <= set(states)
        if reverify:
            assert archive is not None
            assert set(states) | (source or set()) <= archive
