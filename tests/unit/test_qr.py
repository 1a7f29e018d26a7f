"""Pure parts of the query/retrieve relay: key values, destinations, the relay registry, contexts, pull inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset

from guard.config.settings import DestinationSettings, Settings, SourceSettings
from guard.dicom.net import Peer
from guard.domain import status as st
from guard.domain.errors import ConfigError
from guard.ledger.query_answers import values_of
from guard.services.qr.common import single_value
from guard.services.qr.move import BUFFERED_INSTANCES, COMMON_STORAGE_CLASSES, Arrival, MovePlan, RelayRegistry, move_destination
from guard.services.qr.pull import _move_problem, pull_source, targets_from_file, targets_from_uids


def _settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_values_of_reads_single_multi_and_empty_values() -> None:
    """A list of UIDs, one UID, an empty (universal) key and an absent key read as lists of values."""
    ds = Dataset()
    ds.SOPInstanceUID = ["1.2", "1.3"]
    ds.StudyInstanceUID = "1.4"
    ds.PatientID = ""
    assert values_of(ds, "SOPInstanceUID") == ["1.2", "1.3"]
    assert values_of(ds, "StudyInstanceUID") == ["1.4"]
    assert values_of(ds, "PatientID") == []
    assert values_of(ds, "SeriesInstanceUID") == []
    assert single_value(ds, "SOPInstanceUID") == ""
    assert single_value(ds, "StudyInstanceUID") == "1.4"


def test_move_destination_is_a_configured_destination_or_a_source_with_an_address() -> None:
    """[[destinations]] first, then sources with a host; a source without host and an unknown AE are no destination."""
    settings = _settings(
        destinations=[DestinationSettings(ae_title="VIEWER", host="10.0.0.9", port=4242)],
        sources=[SourceSettings(ae_title="PACS", host="10.0.0.5", port=104), SourceSettings(ae_title="MODALITY")],
    )
    assert move_destination(settings, "VIEWER") == Peer("VIEWER", "10.0.0.9", 4242)
    assert move_destination(settings, "PACS ") == Peer("PACS", "10.0.0.5", 104)
    assert move_destination(settings, "MODALITY") is None
    assert move_destination(settings, "NOWHERE") is None


def test_registry_gives_distinct_message_ids_and_matches_only_the_archive() -> None:
    """Relays in flight never share a Message ID; a C-STORE matches by originator Message ID, only from the archive AE."""
    registry = RelayRegistry()
    first = registry.open("ARCHIVE", {"1.1"})
    second = registry.open("ARCHIVE", {"2.1"})
    assert first.message_id != second.message_id
    assert registry.match("ARCHIVE", "GUARD", second.message_id, "9.9") is second
    assert registry.match("OTHER", "GUARD", second.message_id, "2.1") is None
    assert registry.match("ARCHIVE", "GUARD", 65000, "1.1") is None  # a Message ID no relay uses
    # Without Move Originator fields, the SOP Instance UID decides.
    assert registry.match("ARCHIVE", "", None, "1.1") is first
    assert registry.match("ARCHIVE", "", None, "3.3") is None
    registry.close(first)
    assert registry.match("ARCHIVE", "GUARD", first.message_id, "1.1") is None


def test_a_relay_takes_a_few_instances_ahead_and_removes_their_files(tmp_path: Path) -> None:
    """At most BUFFERED_INSTANCES files wait; done_with makes room; closing removes what waits and refuses more."""
    registry = RelayRegistry()
    relay = registry.open("ARCHIVE", {"1.1", "1.2"})
    files = [tmp_path / f"{n}.dcm" for n in range(BUFFERED_INSTANCES + 1)]
    for path in files:
        path.write_bytes(b"x")
    arrivals = [Arrival(path, "1.1") for path in files]
    assert all(relay.deliver(a, timeout=1) for a in arrivals[:BUFFERED_INSTANCES])
    assert relay.deliver(arrivals[-1], timeout=0.05) is False  # no room: the archive will be told
    first = relay.inbox.get_nowait()
    assert isinstance(first, Arrival)
    relay.done_with(first)
    assert not first.path.exists()
    assert relay.deliver(arrivals[-1], timeout=1) is True
    registry.close(relay)
    assert not any(path.exists() for path in files)
    late = tmp_path / "late.dcm"
    assert relay.deliver(Arrival(late, "1.2"), timeout=1) is False


def test_contexts_per_sop_class_stay_within_128_and_never_empty() -> None:
    """Each SOP class gets an uncompressed context plus one per compressed syntax; at most 128; Verification when none is known."""
    one = MovePlan({"1.1": "1.2.840.10008.5.1.4.1.1.2", "1.2": "1.2.840.10008.5.1.4.1.1.2"}).contexts()
    assert len(one) == 7
    assert {str(cx.abstract_syntax) for cx in one} == {"1.2.840.10008.5.1.4.1.1.2"}
    many = MovePlan({f"1.{n}": f"1.2.3.{n}" for n in range(40)}).contexts()
    assert len(many) <= 128
    assert [str(cx.abstract_syntax) for cx in MovePlan({"1.1": ""}).contexts()] == ["1.2.840.10008.1.1"]
    guessed = MovePlan({"1.1": "1.2.840.10008.5.1.4.1.1.2", "1.2": ""}, classes_unknown=True).contexts()
    assert len(guessed) <= 128
    classes = {str(cx.abstract_syntax) for cx in guessed}
    assert {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.1.2"} <= classes
    assert len(COMMON_STORAGE_CLASSES) == len(set(COMMON_STORAGE_CLASSES))


def test_pull_source_is_the_named_one_or_the_only_one_with_an_address() -> None:
    """--source picks a source with a host; without it the only source with a host; otherwise a clear error."""
    one = _settings(sources=[SourceSettings(ae_title="PACS", host="10.0.0.5", port=11112), SourceSettings(ae_title="CT")])
    assert pull_source(one, None) == Peer("PACS", "10.0.0.5", 11112)
    with pytest.raises(ConfigError, match="CT is not a configured source with a host"):
        pull_source(one, "CT")
    two = _settings(sources=[SourceSettings(ae_title="A", host="h1"), SourceSettings(ae_title="B", host="h2")])
    with pytest.raises(ConfigError, match="2 sources have a host"):
        pull_source(two, None)


def test_targets_from_a_file_are_read_lazily_without_blanks_or_comments(tmp_path: Path) -> None:
    """UID files may hold blank lines, comments and surrounding spaces."""
    path = tmp_path / "uids.txt"
    path.write_text("# backfill\n1.2.3\n\n  1.2.4  \n")
    targets = targets_from_file(path)
    assert next(targets).study_uid == "1.2.3"
    assert [t.study_uid for t in targets] == ["1.2.4"]
    assert [t.study_uid for t in targets_from_uids(["1.5", " "])] == ["1.5"]


def test_move_problems_say_what_to_do() -> None:
    """A source's C-MOVE answer becomes a reason an administrator can act on."""
    status = Dataset()
    status.NumberOfFailedSuboperations = 3
    assert _move_problem(st.SUCCESS, status, None, "GUARD") == ""
    assert "add the guard to its DICOM peers" in _move_problem(st.MOVE_DESTINATION_UNKNOWN, status, None, "GUARD")
    failed = Dataset()
    failed.FailedSOPInstanceUIDList = ["1.2.3", "1.2.4"]
    assert _move_problem(0xB000, status, failed, "GUARD").startswith("3 instance(s) failed to arrive (0xB000, e.g. 1.2.3)")
