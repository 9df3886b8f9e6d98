"""`SpeechServer`: the local speech server on a free loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from localcloud.speech_server.app import (
    DEFAULT_API_KEY,
    DEFAULT_MODEL,
    MAX_UPLOAD_BYTES,
    SpeechService,
    Switches,
    create_app,
)
from localcloud.speech_server.engines import Engine, load_engine

T = TypeVar("T")


def default_workers() -> int:
    """The cores this process may run on (macOS has no affinity call: all of them)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SpeechServer:
    """Start with `with SpeechServer() as server:`; point clients at `server.base_url`.

    Pass an already loaded `engine` to share one model between several servers (e.g. a
    pytest session fixture); otherwise `engine_name` is loaded on entry.
    """

    def __init__(
        self,
        *,
        engine: Engine | None = None,
        engine_name: str = "faster-whisper",
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        model: str = DEFAULT_MODEL,
        max_bytes: int = MAX_UPLOAD_BYTES,
        workers: int | None = None,
        switches: Switches | None = None,
        ssl_certfile: Path | None = None,
        ssl_keyfile: Path | None = None,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self._engine = engine
        self._engine_name = engine_name
        self._host = host
        self._port = port
        self.api_key = api_key
        self._model = model
        self._max_bytes = max_bytes
        self._workers = workers or default_workers()
        self._switches = switches
        self._ssl = (ssl_certfile, ssl_keyfile)
        self._startup_timeout_s = startup_timeout_s
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.service: SpeechService | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._ssl[0] else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What the speech client's `speech_base_url` should be."""
        return f"{self.url}/v1"

    def start(self) -> SpeechServer:
        engine = self._engine or load_engine(self._engine_name, workers=self._workers)
        self.service = SpeechService(
            engine,
            api_key=self.api_key,
            model=self._model,
            max_bytes=self._max_bytes,
            workers=self._workers,
            switches=self._switches,
        )
        # Bound here, so the port is known (and taken) before the thread starts.
        # IPPROTO_TCP spelled out: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # says TCP, and without it every answer waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        certfile, keyfile = self._ssl
        config = uvicorn.Config(
            create_app(self.service),
            log_level="warning",
            timeout_graceful_shutdown=1,  # hung requests must not hold up a test's teardown
            ssl_certfile=str(certfile) if certfile else None,
            ssl_keyfile=str(keyfile) if keyfile else None,
        )
        self._server = server = uvicorn.Server(config)
        self._loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=lambda: loop.run_until_complete(server.serve(sockets=[sock])),
            name=f"speech-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"speech server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
        self._server = self._thread = self._loop = None

    def __enter__(self) -> SpeechServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _on_loop(self, fn: Callable[[SpeechService], T]) -> T:
        # The service's state belongs to the server's event loop: read and change it there.
        if self._loop is None or self.service is None:
            raise RuntimeError("speech server is not running")
        service = self.service

        async def call() -> T:
            return fn(service)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        return self._on_loop(lambda s: s.stats.as_json())

    def reset_stats(self) -> dict[str, Any]:
        return self._on_loop(lambda s: s.reset_stats_now())

    def control(self, **changes: Any) -> dict[str, Any]:
        """Change fault/latency switches (the fields of `Switches`); returns them all."""
        return self._on_loop(lambda s: s.update_switches(changes).model_dump())
