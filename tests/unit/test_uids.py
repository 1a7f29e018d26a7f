import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.domain.errors import InvalidUIDError
from guard.domain.uids import is_valid_uid, require_uid

component = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,8}", fullmatch=True))
valid_uids = st.lists(component, min_size=1, max_size=12).map(".".join).filter(lambda u: len(u) <= 64)


@given(valid_uids)
def test_every_grammatical_uid_is_accepted(uid: str) -> None:
    """Any dotted list of numbers without leading zeros, up to 64 characters, is a UID."""
    assert is_valid_uid(uid)


@given(st.text(max_size=80))
def test_a_valid_uid_is_safe_as_a_path_component(value: str) -> None:
    """Whatever text is accepted holds only digits and dots and cannot climb out of a folder."""
    if is_valid_uid(value):
        assert set(value) <= set("0123456789.")
        assert ".." not in value
        assert not value.startswith(".")
        assert "/" not in value


def test_hostile_and_malformed_uids_are_refused() -> None:
    """Path traversal, letters, leading zeros, empty components and 65 characters are not UIDs."""
    for bad in ["../../x", "1.2.abc", "1.02.3", "1..2", "1.2.", ".1.2", "", "1" * 65, "1.2/3", "1.2\x00", " 1.2"]:
        assert not is_valid_uid(bad), bad


def test_require_uid_names_the_field() -> None:
    """The error says which field held the bad value."""
    with pytest.raises(InvalidUIDError, match="SOPInstanceUID"):
        require_uid("../../x", "SOPInstanceUID")


def test_sixty_four_characters_is_the_limit() -> None:
    """64 characters is allowed, 65 is not (PS3.5 9.1)."""
    uid64 = "1." + "2" * 62
    assert len(uid64) == 64
    assert is_valid_uid(uid64)
    assert not is_valid_uid(uid64 + "3")
