"""L3: the `chunk_cache` table of the job database (its migrations), through its own small pool.

Its own pool (built with a statement timeout by sttpipe.adapters.database.create_pool), not the
job repository's, so that a short wait for a connection bounds every cache query while job updates
keep their patience. Any psycopg error (a pool that cannot connect, a timeout) becomes
CacheUnavailable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from sttpipe.cache.base import CacheBackend, CacheKey, CacheUnavailable, EntryKind
from sttpipe.domain.transcripts import CacheLevel

_KEY_COLUMNS = "key_id, kind, scope, content_sha256, model, pipeline_version"


class PostgresCache(CacheBackend):
    level = CacheLevel.L3

    def __init__(
        self, pool: ConnectionPool, namespace: str, ttl_s: float, timeout_s: float
    ) -> None:
        self._pool = pool
        self._namespace = namespace
        self._ttl = timedelta(seconds=ttl_s)
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                yield conn
        except psycopg.Error as exc:  # PoolTimeout is one too
            raise CacheUnavailable(f"postgres: {exc}") from exc

    # -- entries

    def get_many(self, keys: Sequence[CacheKey]) -> dict[CacheKey, bytes]:
        if not keys:
            return {}
        by_id = {k.id: k for k in keys}
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key_id, value FROM chunk_cache WHERE namespace = %s"
                " AND key_id = ANY(%s) AND expires_at > now()",
                (self._namespace, list(by_id)),
            ).fetchall()
        return {by_id[key_id]: bytes(value) for key_id, value in rows}

    def set_many(self, entries: Mapping[CacheKey, bytes]) -> None:
        """Upsert; a rewritten entry keeps its hit count (it is the same computation)."""
        if not entries:
            return
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO chunk_cache (namespace, {_KEY_COLUMNS}, value, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s)"
                " ON CONFLICT (namespace, key_id) DO UPDATE"
                " SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                [
                    (
                        self._namespace,
                        k.id,
                        k.kind.value,
                        k.scope,
                        k.content_sha256,
                        k.model,
                        k.pipeline_version,
                        data,
                        self._ttl,
                    )
                    for k, data in entries.items()
                ],
            )

    def delete_many(self, keys: Sequence[CacheKey]) -> None:
        if keys:
            with self._connection() as conn:
                conn.execute(
                    "DELETE FROM chunk_cache WHERE namespace = %s AND key_id = ANY(%s)",
                    (self._namespace, [k.id for k in keys]),
                )

    def delete_contents(self, scope: str, content_sha256s: Sequence[str]) -> list[CacheKey]:
        """Delete every entry of these contents in `scope` (any model, language, version);
        returns their keys so that the other levels can drop the same entries."""
        with self._connection() as conn:
            rows = conn.execute(
                "DELETE FROM chunk_cache WHERE namespace = %s AND scope = %s"
                " AND content_sha256 = ANY(%s)"
                f" RETURNING {_KEY_COLUMNS}",
                (self._namespace, scope, list(content_sha256s)),
            ).fetchall()
        return [self._key(*row) for row in rows]

    def delete_matching(
        self, *, model: str | None = None, pipeline_version: str | None = None
    ) -> int:
        with self._connection() as conn:
            cur = conn.execute(
                "DELETE FROM chunk_cache WHERE namespace = %(ns)s"
                " AND (%(model)s::text IS NULL OR model = %(model)s)"
                " AND (%(version)s::text IS NULL OR pipeline_version = %(version)s)",
                {"ns": self._namespace, "model": model, "version": pipeline_version},
            )
            return cur.rowcount

    # -- warming and housekeeping

    def record_hits(self, hits: Mapping[CacheKey, int]) -> None:
        """Add hits counted at any level, so the warmer knows what is used most."""
        if not hits:
            return
        # One row at a time in key order: concurrent flushes lock rows in the same order and
        # so cannot deadlock.
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE chunk_cache SET hits = hits + %s, last_hit_at = now()"
                " WHERE namespace = %s AND key_id = %s",
                [(n, self._namespace, k.id) for k, n in sorted(hits.items(), key=_by_id)],
            )

    def most_used(self, limit: int, min_hits: int) -> list[tuple[CacheKey, bytes]]:
        """Live entries with at least `min_hits` hits, the most used first."""
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {_KEY_COLUMNS}, value FROM chunk_cache WHERE namespace = %s"
                " AND hits >= %s AND expires_at > now() ORDER BY hits DESC LIMIT %s",
                (self._namespace, min_hits, limit),
            ).fetchall()
        return [(self._key(*row[:-1]), bytes(row[-1])) for row in rows]

    def purge_expired(self, limit: int = 10_000) -> int:
        with self._connection() as conn:
            cur = conn.execute(
                "DELETE FROM chunk_cache WHERE ctid = ANY(ARRAY("
                " SELECT ctid FROM chunk_cache WHERE expires_at <= now() LIMIT %s))",
                (limit,),
            )
            return cur.rowcount

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) of live entries in this namespace."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(size_bytes), 0) FROM chunk_cache"
                " WHERE namespace = %s AND expires_at > now()",
                (self._namespace,),
            ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def _key(
        self, key_id: str, kind: str, scope: str, content: str, model: str, version: str
    ) -> CacheKey:
        """The key of a row, its columns in _KEY_COLUMNS order."""
        return CacheKey(
            namespace=self._namespace,
            kind=EntryKind(kind),
            id=key_id,
            content_sha256=content,
            model=model,
            pipeline_version=version,
            scope=scope,
        )


def _by_id(item: tuple[CacheKey, int]) -> str:
    return item[0].id
