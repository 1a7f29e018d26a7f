"""``python -m guard``: the command-line interface, or the listener process (``guard.app.listener_main``)."""

import sys

if sys.argv[1:2] == ["listener"]:
    from guard.app.listener_main import main
else:
    from guard.cli.main import main

main()
