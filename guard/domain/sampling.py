"""Which instances a byte verification retrieves: a random sample per series, with the must-check ones always in."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping


def sample_per_series(
    series: Mapping[str, Iterable[str]], per_series: int, *, always: Iterable[str] = (), rng: random.Random | None = None
) -> dict[str, list[str]]:
    """Series UID -> the SOP Instance UIDs to check: ``per_series`` chosen at random (all when ``per_series`` < 0).

    ``always`` (instances whose bytes differed before) are added on top in whatever series they
    are. A series with no instance is left out. The choice is random so that an archive cannot
    learn which instances will be looked at.
    """
    chooser = rng or random.SystemRandom()
    must = set(always)
    chosen: dict[str, list[str]] = {}
    for series_uid, uids in series.items():
        members = sorted(set(uids))
        if not members:
            continue
        picked = set(members) if per_series < 0 else set(chooser.sample(members, min(per_series, len(members))))
        picked |= must.intersection(members)
        if picked:
            chosen[series_uid] = sorted(picked)
    return chosen


def spread(uid: str) -> float:
    """A fraction in [0, 1) fixed by ``uid``: where in the rolling window an instance's first re-check falls.

    Spreading the first re-checks over the window keeps the load even when many instances were
    confirmed at once.
    """
    return int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
