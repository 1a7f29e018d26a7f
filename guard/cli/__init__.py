"""The ``guard`` command (Typer): ``main`` holds the commands, ``audit`` the audit log's, ``pull`` the pull's."""
