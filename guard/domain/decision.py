"""The delete decision: a pure function from facts and live evidence to permitted or refused.

Invariant 3: permitted only when every instance of the study is confirmed in the archive:
every instance the guard received; with ``source_check``, every instance the source lists for
the study; with ``reverify``, a live C-FIND of the archive at decision time lists every one of
them; with ``bytes_sample``, the instances sampled at decision time came back from the archive
with the digest recorded on receipt. An instance whose last byte check differed refuses
whatever the checks, until a later check matches. Anything missing, any error or doubt refuses
(fail closed), with machine-readable reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    """Refusal reasons, part of the public interface."""

    UNKNOWN_STUDY = "unknown-study"
    UNCONFIRMED = "unconfirmed"
    MISSING_IN_ARCHIVE = "missing-in-archive"
    ARCHIVE_UNREACHABLE = "archive-unreachable"
    SOURCE_UNREACHABLE = "source-unreachable"
    UNKNOWN_TO_GUARD = "unknown-to-guard"
    DEAD_LETTERED = "dead-lettered"
    BYTES_DIFFER = "bytes-differ"


SENTENCES = {
    Reason.UNKNOWN_STUDY: "the guard has never received this study",
    Reason.UNCONFIRMED: "some instances are not yet confirmed by the archive",
    Reason.MISSING_IN_ARCHIVE: "the archive does not list some instances",
    Reason.ARCHIVE_UNREACHABLE: "the archive could not be asked at decision time",
    Reason.SOURCE_UNREACHABLE: "the source could not be asked which instances it holds",
    Reason.UNKNOWN_TO_GUARD: "the source holds instances the guard never received",
    Reason.DEAD_LETTERED: "some instances could not be forwarded (dead letters)",
    Reason.BYTES_DIFFER: "the archive returned some instances with other bytes than the guard received, or not at all",
}


@dataclass(frozen=True)
class StudyFacts:
    """What the ledger knows: SOP Instance UID -> state of its newest version; those whose last byte check differed."""

    study_uid: str
    states: dict[str, str]
    bytes_differ: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LiveEvidence:
    """What the peers said at decision time; None where not asked (check off) and an error text where asking failed.

    ``bytes_checked``: the instances retrieved from the archive for the byte sample and
    compared; ``bytes_differ``: those among them that came back with other bytes or not at all.
    """

    archive_listed: set[str] | None = None
    archive_error: str | None = None
    source_listed: set[str] | None = None
    source_error: str | None = None
    bytes_checked: set[str] | None = None
    bytes_differ: frozenset[str] = frozenset()
    bytes_error: str | None = None


@dataclass(frozen=True)
class Decision:
    """``permitted`` or refused with reasons; ``evidence`` is what the decision rested on."""

    study_uid: str
    permitted: bool
    reasons: list[Reason] = field(default_factory=list)
    sentence: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``permitted`` or ``refused``."""
        return "permitted" if self.permitted else "refused"


def _sample(uids: set[str], limit: int = 20) -> list[str]:
    return sorted(uids)[:limit]


def decide_delete(facts: StudyFacts, live: LiveEvidence, *, reverify: bool, source_check: bool, bytes_sample: bool = False) -> Decision:
    """Decide; never raises, never permits on missing evidence."""
    states = facts.states
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state] = counts.get(state, 0) + 1
    evidence: dict[str, Any] = {"instances": len(states), "counts": counts}
    reasons = [Reason.UNKNOWN_STUDY] if not states else []
    dead = {uid for uid, state in states.items() if state == "dead-lettered"}
    lost = {uid for uid, state in states.items() if state == "missing-in-archive"}
    unconfirmed = {uid for uid, state in states.items() if state != "confirmed"} - dead - lost
    _note(reasons, evidence, Reason.DEAD_LETTERED, "dead_lettered", dead)
    _note(reasons, evidence, Reason.UNCONFIRMED, "unconfirmed", unconfirmed)
    # An unknown study is refused on that alone; the peers are not asked about it.
    if source_check and states:
        _check_source(reasons, evidence, live, set(states))
    if reverify and states:
        lost |= _check_archive(reasons, evidence, live, set(states) | (live.source_listed or set()))
    _note(reasons, evidence, Reason.MISSING_IN_ARCHIVE, "missing_in_archive", lost)
    differ = set(facts.bytes_differ) & set(states)
    if bytes_sample and states:
        differ |= _check_bytes(reasons, evidence, live)
    _note(reasons, evidence, Reason.BYTES_DIFFER, "bytes_differ", differ)
    if reasons:
        sentence = "Refused: " + "; ".join(SENTENCES[r] for r in reasons) + "."
        return Decision(facts.study_uid, permitted=False, reasons=reasons, sentence=sentence, evidence=evidence)
    sentence = f"Permitted: all {len(states)} instances are confirmed in the archive."
    return Decision(facts.study_uid, permitted=True, sentence=sentence, evidence=evidence)


def _note(reasons: list[Reason], evidence: dict[str, Any], reason: Reason, key: str, uids: set[str]) -> None:
    if uids:
        reasons.append(reason)
        evidence[key] = _sample(uids)


def _check_source(reasons: list[Reason], evidence: dict[str, Any], live: LiveEvidence, known: set[str]) -> None:
    """Every instance the source holds must be known to the guard."""
    if live.source_listed is None:
        reasons.append(Reason.SOURCE_UNREACHABLE)
        evidence["source_error"] = live.source_error or "the source was not asked"
        return
    evidence["source_listed"] = len(live.source_listed)
    _note(reasons, evidence, Reason.UNKNOWN_TO_GUARD, "unknown_to_guard", live.source_listed - known)


def _check_archive(reasons: list[Reason], evidence: dict[str, Any], live: LiveEvidence, wanted: set[str]) -> set[str]:
    """The archive, asked now, must list every instance; returns those it does not."""
    if live.archive_listed is None:
        reasons.append(Reason.ARCHIVE_UNREACHABLE)
        evidence["archive_error"] = live.archive_error or "the archive was not asked"
        return set()
    evidence["archive_listed"] = len(live.archive_listed)
    return wanted - live.archive_listed


def _check_bytes(reasons: list[Reason], evidence: dict[str, Any], live: LiveEvidence) -> set[str]:
    """The sampled instances, retrieved now, must match; returns those that did not. No retrieve at all is doubt."""
    if live.bytes_checked is None:
        if Reason.ARCHIVE_UNREACHABLE not in reasons:
            reasons.append(Reason.ARCHIVE_UNREACHABLE)
        evidence["bytes_error"] = live.bytes_error or "the archive was not asked for the instances' bytes"
        return set()
    evidence["bytes_checked"] = len(live.bytes_checked)
    return set(live.bytes_differ)
