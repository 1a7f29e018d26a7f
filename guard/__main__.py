"""``python -m guard``."""

from guard.cli.main import main

main()
