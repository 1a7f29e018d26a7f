"""Admission policy for sources: where they may call from and which services they may use.

Pure functions, free of pynetdicom, the ledger and the network; the DICOM side asks them and
acts on the answer (``guard.services.ingest`` audits, ``guard.listener.server`` rejects). A host name in
``allowed_addresses`` is resolved by a ``Resolver`` the caller passes in, so the decision
itself never touches DNS.

Services, per source (``[[sources]] services``):

- ``store``: C-STORE of any storage SOP class;
- ``kos``: IHE IOCM rejection notes (a Key Object Selection Document whose title is a
  rejection code), which the guard treats as delete requests;
- ``commit``: Storage Commitment requests (N-ACTION, PS3.4 J.3.2);
- ``find``: Query/Retrieve C-FIND (PS3.4 C.4.1);
- ``move``: Query/Retrieve C-MOVE and C-GET (PS3.4 C.4.2, C.4.3).

C-ECHO (Verification) is always allowed to an admitted source.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Resolves a host name to the set of its addresses; an empty set when it does not resolve.
Resolver = Callable[[str], frozenset[str]]


class Service(StrEnum):
    """What an admitted source may ask of the guard."""

    STORE = "store"
    KOS = "kos"
    COMMIT = "commit"
    FIND = "find"
    MOVE = "move"


ALL_SERVICES: tuple[Service, ...] = tuple(Service)

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
# Query/Retrieve information models (PS3.4 C.6): Patient Root, Study Root, Patient/Study Only.
_QR_ROOTS = ("1.2.840.10008.5.1.4.1.2.1", "1.2.840.10008.5.1.4.1.2.2", "1.2.840.10008.5.1.4.1.2.3")
_FIND = frozenset(f"{root}.1" for root in _QR_ROOTS)
_MOVE = frozenset(f"{root}.{leaf}" for root in _QR_ROOTS for leaf in ("2", "3"))  # MOVE and GET

# RFC 1123 host names: labels of letters, digits and hyphens, not starting or ending with a hyphen.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def services_granting(abstract_syntax: str) -> frozenset[Service] | None:
    """The services any one of which allows a presentation context; None: always allowed (C-ECHO).

    Every abstract syntax the guard supports that is not Verification, Storage Commitment or
    Query/Retrieve is a storage SOP class. A KOS context is needed both to store ordinary key
    object selections and to send IOCM rejection notes, so either service grants it.
    """
    uid = abstract_syntax.strip()
    if uid == VERIFICATION:
        return None
    if uid == STORAGE_COMMITMENT_PUSH:
        return frozenset({Service.COMMIT})
    if uid in _FIND:
        return frozenset({Service.FIND})
    if uid in _MOVE:
        return frozenset({Service.MOVE})
    if uid == KEY_OBJECT_SELECTION:
        return frozenset({Service.STORE, Service.KOS})
    return frozenset({Service.STORE})


def context_allowed(abstract_syntax: str, services: Iterable[Service]) -> bool:
    """Whether a source with ``services`` may use a presentation context for ``abstract_syntax``."""
    granting = services_granting(abstract_syntax)
    return granting is None or not granting.isdisjoint(services)


def parse_address_entry(entry: str) -> IPNetwork | str:
    """An ``allowed_addresses`` entry as a network (an address is a /32 or /128) or a host name.

    Raise ``ValueError`` naming the problem: a network with host bits set (``10.1.2.3/16``) is
    refused rather than silently widened, as is anything that is neither a network nor a host name.
    """
    text = entry.strip()
    if not text:
        msg = "empty address entry"
        raise ValueError(msg)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "/" in text or text.replace(".", "").isdigit() or ":" in text:
            msg = f"{text!r} is not a valid address or network: {exc}"
            raise ValueError(msg) from exc
    if len(text) > 253 or not _HOST_RE.fullmatch(text):
        msg = f"{text!r} is neither an address, a CIDR network nor a host name"
        raise ValueError(msg)
    return text.lower().rstrip(".")


def normalize_address(address: str) -> IPAddress | None:
    """The peer's address as an IP address; an IPv4-mapped IPv6 address becomes its IPv4 form."""
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class AddressCheck:
    """Whether a peer address matched a source's ``allowed_addresses``, and what was unresolvable."""

    allowed: bool
    unresolved: tuple[str, ...] = ()


def address_allowed(address: str, entries: Iterable[str], resolve: Resolver) -> AddressCheck:
    """Whether ``address`` is inside one of ``entries`` (networks, addresses or host names).

    Host names are resolved with ``resolve`` only when no network entry matched; a name that
    does not resolve matches nothing (fail closed) and is reported in ``unresolved``.
    """
    ip = normalize_address(address)
    if ip is None:
        return AddressCheck(allowed=False)
    names: list[str] = []
    for entry in entries:
        parsed = parse_address_entry(entry)
        if isinstance(parsed, str):
            names.append(parsed)
        elif ip.version == parsed.version and ip in parsed:
            return AddressCheck(allowed=True)
    unresolved: list[str] = []
    for name in names:
        resolved = {normalize_address(a) for a in resolve(name)}
        if not resolved:
            unresolved.append(name)
        if ip in resolved:
            return AddressCheck(allowed=True)
    return AddressCheck(allowed=False, unresolved=tuple(unresolved))
