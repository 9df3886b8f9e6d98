"""Numbered migrations on the real PostgreSQL (127.0.0.1:5432, each test in a schema of its own),
and the DatabaseSchema custom resource's function answering CloudFormation over real HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from sttpipe.adapters.migrations import latest_version, migrate, migrations
from sttpipe.config import get_settings

DATABASE_URL = os.environ.get("STT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]
CONTEXT = SimpleNamespace(
    function_name="MigrationsFunction",
    memory_limit_in_mb=256,
    invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:MigrationsFunction",
    aws_request_id="req-1",
)


@pytest.fixture
def database() -> Iterator[str]:
    """A conninfo whose search_path is a new, empty schema."""
    try:
        admin = psycopg.connect(DATABASE_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {DATABASE_URL} ({exc})")
    schema = f"sttpipe_migrations_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield make_conninfo(DATABASE_URL, options=f"-c search_path={schema}")
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def tables(conninfo: str) -> set[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    return {name for (name,) in rows}


def applied(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [v for (v,) in rows]


def test_the_migrations_are_numbered_without_a_gap() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, latest_version() + 1))
    assert found[0].name == "schema" and latest_version() >= 2


def test_an_empty_database_gets_every_migration_once(database: str) -> None:
    assert migrate(database) == list(range(1, latest_version() + 1))
    assert {"jobs", "job_chunks", "chunk_cache", "webhook_keys"} <= tables(database)
    assert migrate(database) == []
    assert applied(database) == list(range(1, latest_version() + 1))


def test_concurrent_deploys_migrate_once(database: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(migrate(database))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[], [], [], list(range(1, latest_version() + 1))]


def test_a_database_at_the_previous_version_takes_the_next_and_keeps_its_data(
    database: str,
) -> None:
    """The next schema change, on a database as the release before it left it."""
    first, second = migrations()[:2]
    with psycopg.connect(database) as conn:
        conn.execute(first.sql.encode())
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, %s)", (first.name,))
        conn.execute(
            "INSERT INTO jobs (job_id, filename, upload_key, created_at, updated_at)"
            " VALUES ('j1', 'talk.flac', 'uploads/j1/talk.flac', now(), now())"
        )
    assert "webhook_keys" not in tables(database)

    assert migrate(database) == list(range(second.version, latest_version() + 1))
    assert "webhook_keys" in tables(database)
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT filename FROM jobs WHERE job_id = 'j1'").fetchone() == (
            "talk.flac",
        )


def test_a_database_made_by_hand_before_migrations_takes_them(database: str) -> None:
    """Made from the old infra/schema.sql: the tables, and no schema_migrations table."""
    with psycopg.connect(database) as conn:
        conn.execute(migrations()[0].sql.encode())
    assert migrate(database) == list(range(1, latest_version() + 1))


# ---- the custom resource's function ------------------------------------------------------------


class CloudFormationStandIn:
    """Takes the answers PUT to a custom resource's ResponseURL, as CloudFormation's S3 does."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                stand_in.answers.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (
            f"http://127.0.0.1:{self.server.server_address[1]}/cfn-response?X-Amz-Signature=s"
        )
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def request(self, request_type: str) -> dict[str, Any]:
        later = {"PhysicalResourceId": "sttpipe-database-schema"}  # set by the Create's answer
        return {
            "RequestType": request_type,
            "ServiceToken": CONTEXT.invoked_function_arn,
            "ResponseURL": self.url,
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/stt/1",
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": "DatabaseSchema",
            "ResourceType": "Custom::DatabaseSchema",
            "ResourceProperties": {"ServiceToken": "x", "SchemaVersion": str(latest_version())},
            **(later if request_type != "Create" else {}),
        }


@pytest.fixture
def cloudformation() -> Iterator[CloudFormationStandIn]:
    stand_in = CloudFormationStandIn()
    yield stand_in
    stand_in.server.shutdown()


def load_function(monkeypatch: pytest.MonkeyPatch, database_url: str) -> ModuleType:
    monkeypatch.setenv("STT_DATABASE_URL", database_url)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "migrations")
    get_settings.cache_clear()
    spec = importlib.util.spec_from_file_location(
        "migrations_app", ROOT / "functions" / "migrations" / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_custom_resource_migrates_at_deploy_and_answers_cloudformation(
    database: str, cloudformation: CloudFormationStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    function = load_function(monkeypatch, database)
    try:
        function.handler(cloudformation.request("Create"), CONTEXT)
        function.handler(cloudformation.request("Update"), CONTEXT)
        function.handler(cloudformation.request("Delete"), CONTEXT)
    finally:
        get_settings.cache_clear()
    created, updated, deleted = cloudformation.answers
    assert created["Status"] == "SUCCESS" and created["Reason"].startswith("applied migrations")
    assert created["Data"] == {"Version": str(latest_version())}
    assert updated["Status"] == "SUCCESS" and updated["Reason"] == "the schema was up to date"
    assert deleted["Status"] == "SUCCESS" and "kept" in deleted["Reason"]
    assert {a["PhysicalResourceId"] for a in cloudformation.answers} == {"sttpipe-database-schema"}
    assert {a["LogicalResourceId"] for a in cloudformation.answers} == {"DatabaseSchema"}
    assert "webhook_keys" in tables(database)  # Delete left the database alone


def test_a_database_that_answers_late_is_migrated_once_it_does(
    database: str, cloudformation: CloudFormationStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A first deploy: the RDS Proxy's target still registers when CloudFormation asks. Here the
    # database's port starts forwarding only 2 s after the function began trying.
    late = _LateForwarder(psycopg.conninfo.conninfo_to_dict(database), after_s=2.0)
    monkeypatch.setenv("STT_MIGRATION_WAIT_S", "30")
    function = load_function(monkeypatch, late.conninfo)
    started = time.monotonic()
    try:
        function.handler(cloudformation.request("Create"), CONTEXT)
    finally:
        get_settings.cache_clear()
        late.close()
    (answer,) = cloudformation.answers
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert time.monotonic() - started >= 2.0  # it kept trying while the port was closed
    assert "webhook_keys" in tables(database)


class _LateForwarder:
    """A TCP port that refuses connections for `after_s`, then forwards them to PostgreSQL."""

    def __init__(self, target: dict[str, Any], after_s: float) -> None:
        self._target = (str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432))
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # closed: connections are refused until the forwarder listens on it
        options = {k: v for k, v in target.items() if k not in ("host", "port")}
        options.update(host="127.0.0.1", port=self.port, connect_timeout=1)
        self.conninfo = make_conninfo(**options)
        self._server: socketserver.ThreadingTCPServer | None = None
        self._opened = threading.Timer(after_s, self._open)
        self._opened.start()

    def _open(self) -> None:
        target = self._target

        class Pipe(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(target) as upstream:
                    pumps = [
                        threading.Thread(target=_pump, args=(self.request, upstream)),
                        threading.Thread(target=_pump, args=(upstream, self.request)),
                    ]
                    for pump in pumps:
                        pump.start()
                    for pump in pumps:
                        pump.join()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Pipe)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._opened.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the other side closed


def test_a_failed_migration_fails_the_deploy_with_the_reason(
    cloudformation: CloudFormationStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STT_MIGRATION_WAIT_S", "1")
    function = load_function(monkeypatch, "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        function.handler(cloudformation.request("Create"), CONTEXT)
    finally:
        get_settings.cache_clear()
    (answer,) = cloudformation.answers
    assert answer["Status"] == "FAILED"
    assert answer["Reason"].startswith("the database could not be migrated: OperationalError")
