"""``python -m guard``."""

from guard.cli import main

main()
