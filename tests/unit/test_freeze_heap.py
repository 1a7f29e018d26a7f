"""What a started guard process holds is left out of the garbage collector's scans; what comes later is still collected."""

from __future__ import annotations

import gc
import weakref

from guard import runtime


class _Node:
    """An object that can sit in a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def test_freeze_heap_freezes_what_lives_now_and_later_cycles_are_still_collected() -> None:
    """After ``freeze_heap`` the objects alive are frozen (never scanned), and a cycle made afterwards is freed by a collection."""
    try:
        runtime.freeze_heap()
        assert gc.get_freeze_count() > 0
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        watch = weakref.ref(first)
        del first, second
        gc.collect()
        assert watch() is None
    finally:
        gc.unfreeze()
