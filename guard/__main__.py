"""``python -m guard``: the same entry point as the ``guard`` command (``guard.entry``)."""

from guard.entry import main

main()
