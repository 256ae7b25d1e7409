"""Hold SQLite's write lock on a nija-guard database until killed (tests/test_multiprocess.py).

``sqlite_locker.py PATH [LEASE_KEY]``: opens PATH, runs ``BEGIN IMMEDIATE``
(the lock every backend write queues on), optionally writes a lease row for
LEASE_KEY inside that transaction (never committed), prints ``LOCKED`` and
blocks reading stdin. A line on stdin commits and exits; kill -9 leaves the
transaction open, and the OS releases the lock with the process.
"""

from __future__ import annotations

import sqlite3
import sys
import time


def main() -> int:
    path = sys.argv[1]
    key = sys.argv[2] if len(sys.argv) > 2 else None
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("BEGIN IMMEDIATE")
    if key is not None:
        db.execute(
            "INSERT OR REPLACE INTO leases (key, owner, token, expires_at) VALUES (?, ?, ?, ?)",
            (key, "sqlite-locker", 1_000_000, time.time() + 3600),
        )
    print("LOCKED", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
    print("COMMITTED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
