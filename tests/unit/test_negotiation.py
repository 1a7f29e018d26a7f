"""Negotiation against the listener's prepared contexts gives exactly pynetdicom's own answer."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, presentation
from pynetdicom.presentation import PresentationContext

from guard.domain.admission import ALL_SERVICES, Service, context_allowed
from guard.listener.server import add_supported_contexts
from guard.runtime import negotiation
from guard.runtime.negotiation import SupportedContexts

SUPPORTED = add_supported_contexts(AE(), query_retrieve=True)
SUPPORTED_UIDS = [str(cx.abstract_syntax) for cx in SUPPORTED]
# Abstract syntaxes the guard does not support: retired or made-up SOP classes, a private one.
FOREIGN_UIDS = ["1.2.840.10008.5.1.4.1.1.5", "1.2.840.10008.3.1.1.1", "1.2.3.4.5.6", "1.2.826.0.1.3680043.9.9999.1"]
# Transfer syntaxes pynetdicom knows, and some it does not.
SYNTAXES = [*ALL_TRANSFER_SYNTAXES, "1.2.840.10008.1.2.4.999", "1.2.3.4", "1.2.840.10008.1.2.1.98"]

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # the one context the listener supports with SCP/SCU roles
# Weighted towards Storage Commitment and Verification, so that role selection and repeats are common.
abstract_syntaxes = st.one_of(
    st.sampled_from([STORAGE_COMMITMENT, "1.2.840.10008.1.1"]), st.sampled_from(SUPPORTED_UIDS), st.sampled_from(FOREIGN_UIDS)
)
requested = st.lists(
    st.tuples(st.integers(0, 20).map(lambda n: 2 * n + 1), abstract_syntaxes, st.lists(st.sampled_from(SYNTAXES), min_size=1, max_size=6)),
    min_size=0,
    max_size=12,
)
role_pairs = st.tuples(st.booleans(), st.booleans())
service_sets = st.one_of(st.none(), st.frozensets(st.sampled_from(ALL_SERVICES)))


@st.composite
def proposals(draw: st.DrawFn) -> tuple[list[tuple[int, str, list[str]]], dict[str, tuple[bool, bool]]]:
    """Proposed contexts, and SCP/SCU Role Selection items for some of their abstract syntaxes and for others."""
    items = draw(requested)
    named = sorted({abstract_syntax for _, abstract_syntax, _ in items})
    roles = draw(st.dictionaries(st.sampled_from(named), role_pairs)) if named else {}
    roles.update(draw(st.dictionaries(abstract_syntaxes, role_pairs, max_size=2)))
    return items, roles


@st.composite
def acceptors(draw: st.DrawFn) -> SupportedContexts:
    """Supported contexts of any shape: a few abstract syntaxes, each with its own transfer syntaxes (in any order) and roles."""
    ae = AE()
    for abstract_syntax in draw(st.lists(abstract_syntaxes, unique=True, min_size=1, max_size=8)):
        syntaxes = draw(st.lists(st.sampled_from(SYNTAXES), unique=True, min_size=1, max_size=8))
        scu, scp = draw(st.sampled_from([None, True, False])), draw(st.sampled_from([None, True, False]))
        ae.add_supported_context(abstract_syntax, syntaxes, scu_role=scu, scp_role=scp)
    return SupportedContexts(ae.supported_contexts)


def _contexts(items: list[tuple[int, str, list[str]]]) -> list[PresentationContext]:
    contexts = []
    for context_id, abstract_syntax, syntaxes in items:
        cx = PresentationContext()
        cx.context_id = context_id
        cx.abstract_syntax = abstract_syntax
        cx.transfer_syntax = syntaxes
        contexts.append(cx)
    return contexts


def _answer(result: tuple[list[PresentationContext], list[Any]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Everything of a negotiation's answer that reaches the peer or the association, as plain values."""
    contexts, roles = result
    return (
        [
            (cx.context_id, str(cx.abstract_syntax), [str(ts) for ts in cx.transfer_syntax], cx.result, cx.as_scu, cx.as_scp)
            for cx in contexts
        ],
        [(str(role.sop_class_uid), role.scu_role, role.scp_role) for role in roles],
    )


def _supported(services: frozenset[Service] | None) -> SupportedContexts:
    return SUPPORTED if services is None else SUPPORTED.restricted(services)


def _both(items: list[tuple[int, str, list[str]]], roles: dict[str, Any], supported: SupportedContexts) -> None:
    reference = presentation.negotiate_as_acceptor(_contexts(items), list(supported), dict(roles))  # type: ignore[arg-type]
    prepared = negotiation.negotiate_as_acceptor(_contexts(items), copy.deepcopy(supported), dict(roles))
    assert _answer(reference) == _answer(prepared)


@settings(max_examples=400, deadline=None)
@given(proposals(), service_sets)
def test_prepared_negotiation_answers_as_pynetdicom(proposal: tuple[list[Any], dict[str, Any]], services: Any) -> None:
    """Any proposal against the listener's contexts for any service set: results, transfer syntaxes and roles are pynetdicom's.

    Proposed contexts supported or not, with any transfer syntaxes and repeated IDs, and role
    selection items for some of them: every result and reason, chosen transfer syntax, role and
    role selection reply is the one pynetdicom's own negotiation gives.
    """
    items, roles = proposal
    _both(items, roles, _supported(services))


@settings(max_examples=400, deadline=None)
@given(proposals(), acceptors())
def test_prepared_negotiation_answers_as_pynetdicom_for_any_supported_contexts(
    proposal: tuple[list[Any], dict[str, Any]], supported: Any
) -> None:
    """The same for supported contexts of any shape: any transfer syntax order, any SCP/SCU roles (None, True, False)."""
    items, roles = proposal
    _both(items, roles, supported)


@given(service_sets)
def test_the_contexts_of_a_service_set_are_the_listeners_own_narrowed_as_before(services: Any) -> None:
    """``restricted`` keeps the contexts (the same objects, in order) that admission allows, and gives each association its own list."""
    if services is None:
        services = frozenset()
    expected = [cx for cx in SUPPORTED if context_allowed(str(cx.abstract_syntax), services)]
    first, second = SUPPORTED.restricted(services), SUPPORTED.restricted(services)
    assert [id(cx) for cx in expected] == [id(cx) for cx in first]
    assert first == second
    assert first is not second
    assert set(first.table) == {cx.abstract_syntax for cx in expected}


def test_a_copy_per_association_is_a_new_list_of_the_same_contexts() -> None:
    """Pynetdicom deep-copies the server's contexts for each association: the copy is a new list sharing contexts and table."""
    copied = copy.deepcopy(SUPPORTED)
    assert isinstance(copied, SupportedContexts)
    assert copied is not SUPPORTED
    assert [id(cx) for cx in copied] == [id(cx) for cx in SUPPORTED]
    assert copied.table is SUPPORTED.table


def test_a_list_changed_after_it_was_prepared_is_negotiated_by_pynetdicom() -> None:
    """A prepared list that lost a context no longer matches its table: the answer is still pynetdicom's (the context rejected)."""
    changed = copy.deepcopy(SUPPORTED)
    verification = next(cx for cx in changed if cx.abstract_syntax == "1.2.840.10008.1.1")
    changed.remove(verification)
    rq = _contexts([(1, "1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    [context], _ = negotiation.negotiate_as_acceptor(rq, changed)
    assert context.result == 0x03


def test_the_listener_negotiates_through_the_prepared_contexts_once_configured(tmp_path: Any) -> None:
    """After ``configure_dicom``, pynetdicom's ACSE calls the prepared negotiation (on the pinned pynetdicom release)."""
    from pynetdicom import acse  # noqa: PLC0415 - the module whose name the listener replaces

    from guard import runtime  # noqa: PLC0415 - configuring pynetdicom is what is checked

    runtime.configure_dicom(tmp_path)
    assert negotiation.installed()
    assert acse.negotiate_as_acceptor is negotiation.negotiate_as_acceptor  # type: ignore[attr-defined]
