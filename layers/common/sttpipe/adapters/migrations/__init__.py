"""The job database's schema as numbered migrations: `NNNN_<name>.sql` files in this package
(they travel inside the Lambda layer), applied in order, each once, recorded in
`schema_migrations`.

`migrate()` runs at every deploy (the stack's DatabaseSchema custom resource) and when a local
cloud starts. It is safe to run again and concurrently: one transaction under an advisory lock
applies whatever is pending, or nothing. The next schema change is a new file with the next
number; a file that has been released is never edited.

By hand: `python -m sttpipe.adapters.migrations "<libpq URL>"`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from importlib.resources import files

import psycopg

# Any constant will do: it keeps two deploys (or local clouds) from migrating at once.
_LOCK_KEY = 0x5777_0001
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The migration files are not a gapless sequence."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations in order; their numbers must run 1, 2, 3, ... without a gap."""
    found = []
    for entry in files(__package__).iterdir():
        if match := _FILE.match(entry.name):
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], sql))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise MigrationError(f"migrations must be numbered 1..n: {[m.version for m in found]}")
    return found


def latest_version() -> int:
    return len(migrations())


def migrate(conninfo: str) -> list[int]:
    """Apply the pending migrations; returns their versions (empty when there were none)."""
    known = migrations()
    with psycopg.connect(conninfo) as conn:  # one transaction, committed on leaving
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # Forward only: a database ahead of this code (a rolled-back deploy) is left as it is.
        applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
        pending = [m for m in known if m.version not in applied]
        for migration in pending:
            conn.execute(migration.sql.encode())  # bytes: may hold several statements
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    return [m.version for m in pending]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sttpipe.adapters.migrations <libpq URL>")
    done = migrate(sys.argv[1])
    print(f"applied migrations {done}" if done else "the schema was up to date")
