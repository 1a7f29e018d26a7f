"""The admission policy: allowed addresses (networks, addresses, host names) and services per source."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from guard.domain.admission import (
    ALL_SERVICES,
    KEY_OBJECT_SELECTION,
    STORAGE_COMMITMENT_PUSH,
    VERIFICATION,
    Service,
    address_allowed,
    context_allowed,
    parse_address_entry,
    services_granting,
)

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"


def no_dns(name: str) -> frozenset[str]:
    """A resolver that knows nothing."""
    del name
    return frozenset()


def test_address_outside_the_range_is_not_allowed() -> None:
    """10.1.0.0/16 admits 10.1.x.y and nothing else; IPv4-mapped IPv6 counts as IPv4."""
    entries = ["10.1.0.0/16"]
    assert address_allowed("10.1.200.3", entries, no_dns).allowed
    assert address_allowed("::ffff:10.1.0.9", entries, no_dns).allowed
    assert not address_allowed("10.2.0.1", entries, no_dns).allowed
    assert not address_allowed("not an address", entries, no_dns).allowed


def test_host_names_are_resolved_and_fail_closed() -> None:
    """A host name matches the addresses it resolves to; one that does not resolve matches nothing and is named."""
    resolver = {"pacs.example": frozenset({"192.0.2.7"})}.get
    check = address_allowed("192.0.2.7", ["pacs.example"], lambda n: resolver(n, frozenset()))
    assert check.allowed
    missing = address_allowed("192.0.2.7", ["gone.example"], no_dns)
    assert not missing.allowed
    assert missing.unresolved == ("gone.example",)


@pytest.mark.parametrize("entry", ["10.1.2.3/16", "", "300.1.1.1", "bad_name!", "-x.example", "1.2.3.4/33"])
def test_invalid_entries_are_refused(entry: str) -> None:
    """Host bits set, bad addresses and bad names are configuration errors, never silently widened."""
    with pytest.raises(ValueError, match=r"not|empty|neither"):
        parse_address_entry(entry)


@given(hs.ip_addresses(v=4), hs.integers(min_value=0, max_value=32))
def test_network_membership_matches_ipaddress(ip: ipaddress.IPv4Address, prefix: int) -> None:
    """For any address and any network around it, the decision is exactly network membership."""
    network = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
    other = ipaddress.IPv4Address(int(ip) ^ (1 << (32 - prefix)) if prefix > 0 else int(ip))
    assert address_allowed(str(ip), [str(network)], no_dns).allowed
    assert address_allowed(str(other), [str(network)], no_dns).allowed == (other in network)


def test_services_map_to_presentation_contexts() -> None:
    """Each service grants its SOP classes; C-ECHO is always allowed; KOS is granted by store or kos."""
    assert services_granting(VERIFICATION) is None
    assert services_granting(STORAGE_COMMITMENT_PUSH) == {Service.COMMIT}
    assert services_granting(STUDY_ROOT_FIND) == {Service.FIND}
    assert services_granting(STUDY_ROOT_MOVE) == {Service.MOVE}
    assert services_granting(PATIENT_ROOT_GET) == {Service.MOVE}
    assert services_granting(CT_STORAGE) == {Service.STORE}
    assert services_granting(KEY_OBJECT_SELECTION) == {Service.STORE, Service.KOS}


@given(hs.sets(hs.sampled_from(ALL_SERVICES)))
def test_a_context_is_allowed_exactly_when_a_granting_service_is_held(services: set[Service]) -> None:
    """No set of services lets through a context none of them grants."""
    for uid in (CT_STORAGE, STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STORAGE_COMMITMENT_PUSH, KEY_OBJECT_SELECTION):
        granting = services_granting(uid)
        assert granting is not None
        assert context_allowed(uid, services) == bool(granting & services)
    assert context_allowed(VERIFICATION, services)
