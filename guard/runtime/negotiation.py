"""The acceptor's supported presentation contexts, prepared once, and pynetdicom's negotiation against them.

For every inbound association pynetdicom deep-copies the acceptor's supported contexts
(``RequestHandler._create_association``), and ``negotiate_as_acceptor`` then builds a dictionary
of them by abstract syntax and walks a supported context's transfer syntaxes, in order, for the
first one the requestor proposed (PS3.8 9.3.3.2). The guard supports about 180 abstract syntaxes,
most with every transfer syntax pynetdicom knows, and narrows them per source to the services
it may use: all of that was redone for every association, while the answer depends only on the
listener's contexts and the source's services.

``SupportedContexts`` is the list pynetdicom expects, with what negotiation looks up made once:
for each abstract syntax its context, the rank of each of its transfer syntaxes and its SCP/SCU
roles. Copying it (``deepcopy``, as pynetdicom does per association) gives a new list of the same
contexts and the same table; ``restricted`` gives the contexts of one service set, computed once
per set. Negotiation only reads the supported contexts and builds new ones for its answer.

``negotiate_as_acceptor`` answers exactly as pynetdicom 3.0.4's ``negotiate_as_acceptor`` does
(same results, reasons, chosen transfer syntax, roles and role-selection replies, in the same
order; a property test compares both): it loops over the proposed contexts as pynetdicom does,
looking each up in the table instead of rebuilding it. For supported contexts that are not a
``SupportedContexts`` it is pynetdicom's own function. ``install()`` puts it where pynetdicom's
ACSE calls it, on ``PYNETDICOM_VERSION`` only (the release the loop was written against).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, cast

import pynetdicom
from pynetdicom import acse, presentation
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import SCP_SCU_ROLES, PresentationContext

from guard.domain.admission import Service, context_allowed
from guard.runtime.reactor import PYNETDICOM_VERSION

#: pynetdicom's own negotiation, for supported contexts that were not prepared.
pynetdicom_negotiate_as_acceptor = presentation.negotiate_as_acceptor

# PS3.8 9.3.3.2 Table 9-18: presentation context results.
_ACCEPTANCE = 0x00
_USER_REJECTION = 0x01
_ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
_TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04

_installed = False
_install_lock = threading.Lock()

Roles = Mapping[str, tuple[bool | None, bool | None]]


@dataclass(frozen=True)
class _Entry:
    """What negotiation needs of one supported context."""

    context: PresentationContext
    #: The context's transfer syntaxes in the acceptor's order of preference.
    transfer_syntaxes: tuple[Any, ...]
    #: Position of each transfer syntax in ``transfer_syntaxes`` (the first one wins on repeats).
    rank: Mapping[str, int]
    #: (SCU role, SCP role) as configured for the acceptor.
    roles: tuple[bool | None, bool | None]

    @classmethod
    def of(cls, context: PresentationContext) -> _Entry:
        """The entry of ``context``."""
        syntaxes = tuple(context.transfer_syntax)
        rank: dict[str, int] = {}
        for index, syntax in enumerate(syntaxes):
            rank.setdefault(syntax, index)
        return cls(context, syntaxes, rank, (context.scu_role, context.scp_role))


@dataclass
class _Prepared:
    """What the copies of one ``SupportedContexts`` share: the table, and the lists per service set."""

    table: dict[Any, _Entry]
    restricted: dict[frozenset[Service], SupportedContexts] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class SupportedContexts(list[PresentationContext]):
    """The acceptor's supported contexts with their negotiation table, built once (see the module docstring)."""

    def __init__(self, contexts: Iterable[PresentationContext], prepared: _Prepared | None = None) -> None:
        """Prepare ``contexts`` (abstract syntaxes unique, as an AE keeps them); ``prepared``: the table they already have."""
        super().__init__(contexts)
        # As pynetdicom's dictionary: the last context of an abstract syntax wins.
        self.prepared = prepared or _Prepared({cx.abstract_syntax: _Entry.of(cx) for cx in self})

    @property
    def table(self) -> dict[Any, _Entry]:
        """Each abstract syntax's entry."""
        return self.prepared.table

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """A new list of the same contexts and table: negotiation reads them and never changes them."""
        return cast("Self", SupportedContexts(self, self.prepared))

    def __copy__(self) -> Self:
        """As ``__deepcopy__``."""
        return cast("Self", SupportedContexts(self, self.prepared))

    def restricted(self, services: frozenset[Service]) -> SupportedContexts:
        """A new list of the contexts a source with ``services`` may use (``guard.domain.admission``), in this order.

        The selection and its table are computed once per set of services.
        """
        prepared = self.prepared
        with prepared.lock:
            found = prepared.restricted.get(services)
            if found is None:
                allowed = [cx for cx in self if context_allowed(str(cx.abstract_syntax), services)]
                table = {cx.abstract_syntax: prepared.table[cx.abstract_syntax] for cx in allowed}
                found = prepared.restricted[services] = SupportedContexts(allowed, _Prepared(table))
        return SupportedContexts(found, found.prepared)


def _role_reply(
    context: PresentationContext, requested: tuple[bool | None, bool | None], entry: _Entry
) -> SCP_SCU_RoleSelectionNegotiation:
    """The SCP/SCU Role Selection reply for an accepted context (PS3.7 D.3.3.4): never 1 where 0 was proposed."""
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = context.abstract_syntax
    role.scu_role = False if requested[0] is False else entry.roles[0]
    role.scp_role = False if requested[1] is False else entry.roles[1]
    return role


def _negotiate_one(rq_context: PresentationContext, context: PresentationContext, entry: _Entry, roles: Roles) -> bool:
    """Negotiate ``context`` (already named) against ``entry`` as pynetdicom does; whether a role reply is due.

    The transfer syntax is the acceptor's first one that the requestor proposed, the lowest rank
    among the proposed ones. Sets ``result``, ``transfer_syntax`` and the roles of ``context``.
    """
    has_role = context.abstract_syntax in roles
    rq_roles = roles[cast("str", context.abstract_syntax)] if has_role else (None, None)
    best = min((entry.rank[ts] for ts in rq_context.transfer_syntax if ts in entry.rank), default=None)
    if best is None:
        context.result = _TRANSFER_SYNTAXES_NOT_SUPPORTED
        context.transfer_syntax = [rq_context.transfer_syntax[0]]
        return False
    context.transfer_syntax = [entry.transfer_syntaxes[best]]
    context.result = _ACCEPTANCE
    if None in entry.roles:
        # Default roles, and no role selection reply (pynetdicom)
        context._as_scu = False  # noqa: SLF001 - the attributes pynetdicom's negotiation sets
        context._as_scp = True  # noqa: SLF001
        has_role = False
    else:
        outcome = SCP_SCU_ROLES[rq_roles][entry.roles]
        context._as_scu = outcome[2]  # noqa: SLF001
        context._as_scp = outcome[3]  # noqa: SLF001
    if context.as_scu is False and context.as_scp is False:
        context.result = _USER_REJECTION
    return context.result == _ACCEPTANCE and has_role


def negotiate_as_acceptor(
    rq_contexts: list[PresentationContext], ac_contexts: list[PresentationContext], roles: Roles | None = None
) -> tuple[list[PresentationContext], list[SCP_SCU_RoleSelectionNegotiation]]:
    """Pynetdicom's ``negotiate_as_acceptor``, looking supported contexts up in a ``SupportedContexts`` table."""
    # A list changed since it was prepared (its table no longer matches) is negotiated by pynetdicom.
    prepared = isinstance(ac_contexts, SupportedContexts) and len(ac_contexts.table) == len(ac_contexts)
    if not prepared or not ac_contexts or not rq_contexts:
        return pynetdicom_negotiate_as_acceptor(rq_contexts, ac_contexts, roles)  # type: ignore[arg-type]
    roles = roles or {}
    table = cast("SupportedContexts", ac_contexts).table
    result_contexts: list[PresentationContext] = []
    reply_roles: dict[Any, SCP_SCU_RoleSelectionNegotiation] = {}
    # As pynetdicom: one result per (context ID, abstract syntax), the last proposal of a repeat.
    requestor_contexts = {(cx.context_id, cx.abstract_syntax): cx for cx in rq_contexts}
    for (context_id, abstract_syntax), rq_context in requestor_contexts.items():
        context = PresentationContext()
        context.context_id = context_id
        context.abstract_syntax = abstract_syntax
        context._as_scu = False  # noqa: SLF001 - as pynetdicom's negotiation
        context._as_scp = False  # noqa: SLF001
        entry = table.get(abstract_syntax)
        if entry is None:
            context.result = _ABSTRACT_SYNTAX_NOT_SUPPORTED
            context.transfer_syntax = [rq_context.transfer_syntax[0]]
        elif _negotiate_one(rq_context, context, entry, roles):
            reply_roles[context.abstract_syntax] = _role_reply(context, roles[cast("str", context.abstract_syntax)], entry)
        result_contexts.append(context)
    result_contexts = sorted(result_contexts, key=lambda x: cast("int", x.context_id))
    return result_contexts, sorted(reply_roles.values(), key=lambda x: cast("str", x.sop_class_uid))


def installed() -> bool:
    """Whether ``negotiate_as_acceptor`` is the one pynetdicom's ACSE calls."""
    return _installed


def install() -> bool:
    """Make pynetdicom's ACSE negotiate through ``negotiate_as_acceptor`` (once per process); whether it does.

    On a pynetdicom release other than ``PYNETDICOM_VERSION`` nothing is changed (the reactor
    module logs ``reactor.polling`` for the same condition).
    """
    global _installed  # noqa: PLW0603 - one process-wide switch, set once
    with _install_lock:
        if not _installed and pynetdicom.__version__ == PYNETDICOM_VERSION:
            acse.negotiate_as_acceptor = negotiate_as_acceptor  # type: ignore[attr-defined,assignment]
            _installed = True
        return _installed
