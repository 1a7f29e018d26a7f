"""``python -m guard.ledger.migrate``: bring the ledger on stdin's URL to the newest schema revision, then exit.

Run by ``guard.ledger.db.migrate_in_child`` so that the process that asked (``guard serve``)
never loads Alembic. The URL comes on stdin, not on the command line, where ``ps`` would show
its password. Exit codes: 0 migrated (or nothing to do), 3 the ledger cannot be reached, 1 any
other failure; the problem is the last line on stderr.
"""

from __future__ import annotations

import sys

from guard.domain.errors import LedgerError, LedgerUnavailableError
from guard.ledger.db import EXIT_UNAVAILABLE, migrate, open_engine


def main() -> int:
    """Migrate the ledger whose URL is the first line of stdin; the exit code."""
    url = sys.stdin.readline().strip()
    try:
        migrate(open_engine(url))
    except LedgerUnavailableError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - the parent reads the last line
        return EXIT_UNAVAILABLE
    except LedgerError as exc:
        print(exc, file=sys.stderr)  # noqa: T201 - idem
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
