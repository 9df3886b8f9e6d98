"""The child side of the function host: one process per execution environment, like Lambda's.

`serve` runs in a spawned process. It redirects the process's output to the function's log file,
takes on the function's environment, imports the handler once (module state then lives across
invocations, as in a warm Lambda container) and answers invocations sent over a pipe. Events and
results cross the pipe as JSON text, so a handler returning something JSON cannot carry fails
here as it would on Lambda.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

from localcloud.recording import RECORD_DIR_ENV
from localcloud.recording import install as record


@dataclass(frozen=True)
class RuntimeConfig:
    """What a process needs to become one function's execution environment (picklable)."""

    function_name: str
    function_arn: str
    memory_mb: int
    handler: str  # "module.function"
    code_dir: str
    layer_dirs: tuple[str, ...]
    environment: dict[str, str]
    log_path: str
    echo_prefix: str | None  # also copy the output to stderr with this prefix


@dataclass
class LambdaContext:
    """The Lambda runtime's context object (the attributes Powertools and handlers read)."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


class _Tee(io.TextIOBase):
    """Writes to the log file and, prefixed line by line, to the terminal."""

    def __init__(self, primary: TextIO, echo: TextIO, prefix: str) -> None:
        self._primary, self._echo, self._prefix = primary, echo, prefix
        self._line_start = True

    def write(self, s: str) -> int:
        self._primary.write(s)
        for line in s.splitlines(keepends=True):
            self._echo.write(self._prefix + line if self._line_start else line)
            self._line_start = line.endswith("\n")
        return len(s)

    def flush(self) -> None:
        self._primary.flush()
        self._echo.flush()

    def fileno(self) -> int:
        return self._primary.fileno()


def _redirect_output(config: RuntimeConfig) -> None:
    terminal = os.dup(2)
    fd = os.open(config.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    # At the descriptor level, so output of native code (e.g. FFmpeg) lands in the log too.
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    log_stream = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    stream: TextIO = log_stream
    if config.echo_prefix is not None:
        echo = open(terminal, "w", buffering=1, encoding="utf-8")  # noqa: SIM115
        stream = _Tee(log_stream, echo, config.echo_prefix)  # type: ignore[assignment]
    else:
        os.close(terminal)
    sys.stdout = sys.stderr = stream


def _load_handler(config: RuntimeConfig) -> Callable[[Any, Any], Any]:
    paths = [config.code_dir]
    for layer in config.layer_dirs:
        # A built layer keeps Python code under python/; the source tree has it at the top.
        paths += [os.path.join(layer, "python"), layer]
    sys.path[:0] = [p for p in paths if os.path.isdir(p)]
    os.chdir(config.code_dir)  # Lambda runs in its task root
    if RECORD_DIR_ENV in os.environ:  # TEST ONLY: see localcloud.recording
        record(Path(os.environ[RECORD_DIR_ENV]) / f"{config.function_name}.jsonl")
    module_name, _, function = config.handler.rpartition(".")
    handler: Callable[[Any, Any], Any] = getattr(importlib.import_module(module_name), function)
    return handler


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _max_memory_mb() -> int:
    # ru_maxrss survives exec, so a spawned child reports its parent's peak; VmHWM does not.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def serve(config: RuntimeConfig, conn: Connection) -> None:
    """Process entry point: initialise, then answer (event JSON, request id, deadline) tuples."""
    _redirect_output(config)
    os.environ.clear()
    os.environ.update(config.environment)
    init_error: dict[str, Any] | None = None
    try:
        handler = _load_handler(config)
    except Exception as e:  # reported with every invocation, as Lambda does
        traceback.print_exc()
        init_error = _error(e, "Runtime.ImportModuleError")
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        event_json, request_id, deadline_ms = message
        print(f"START RequestId: {request_id} Version: $LATEST")
        started = time.monotonic()
        if init_error is not None:
            reply: tuple[str, Any] = ("error", init_error)
        else:
            context = LambdaContext(
                function_name=config.function_name,
                function_version="$LATEST",
                invoked_function_arn=config.function_arn,
                memory_limit_in_mb=config.memory_mb,
                aws_request_id=request_id,
                log_group_name=config.environment.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
                log_stream_name=config.environment.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
                deadline_ms=deadline_ms,
            )
            try:
                reply = ("ok", json.dumps(handler(json.loads(event_json), context)))
            except Exception as e:
                print(f"[ERROR] {type(e).__name__}: {e}\n{traceback.format_exc()}", end="")
                reply = ("error", _error(e))
        duration_ms = (time.monotonic() - started) * 1000
        max_rss_mb = _max_memory_mb()
        print(f"END RequestId: {request_id}")
        print(
            f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
            f"Memory Size: {config.memory_mb} MB\tMax Memory Used: {max_rss_mb} MB"
        )
        conn.send(reply)
