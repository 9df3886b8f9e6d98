"""Running the template's functions locally, fed by their SQS event sources as Lambda would.

For every function the host keeps a pool of long-lived processes (see `localcloud.runtime`), each
standing in for one Lambda execution environment: started on first use (a cold start), or all
at once, in parallel, when the host starts with `prewarm` (what `stt` does, so that a first job
is not slowed by cold starts a deployed stack would long have left behind). A warm process is
always preferred to a cold one.

Like Lambda's event source mappings, every SQS event source has a poller of its own that
long-polls its queue, so a message on any queue is seen at once, and keeps at most its
MaximumConcurrency batches in flight. A received batch goes to a free process of the function;
when none is free, the sources are served in order of descending MaximumConcurrency (so a high
priority queue is drained before normal before low). The handler gets a real SQS event; the
messages that succeeded are deleted, honouring ReportBatchItemFailures. On an error or a timeout
(the process is killed and later replaced, like Lambda) nothing is deleted: the messages come
back after the queue's visibility timeout and the emulator's redrive policy moves them to the
dead-letter queue.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from localcloud.emulators import Endpoint
from localcloud.provision import BoundSqsSource, FunctionSpec, Stack
from localcloud.runtime import RuntimeConfig, serve

log = logging.getLogger(__name__)

_SPAWN: Final = multiprocessing.get_context("spawn")
_MAIN_SWAP = threading.Lock()


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While a function's process is started: a spawned child re-imports the parent's
    `__main__` (a benchmark, pytest, `stt`), which a Lambda container never holds; its imports
    would run in every function and count in its memory (100 MB for bench_e2e.py). `serve` is
    imported by name, so the child needs none of it."""
    with _MAIN_SWAP:
        main = sys.modules["__main__"]
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            sys.modules["__main__"] = main


_MAX_RECEIVE: Final = 10  # SQS ReceiveMessage returns at most 10 messages per call
# What a function process inherits from the host's environment; the rest is the template's.
_PASSTHROUGH: Final = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "PYTHONPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclass(frozen=True)
class Invocation:
    """The outcome of one invocation, as the Lambda service reports it."""

    request_id: str
    outcome: Literal["ok", "error", "timeout"]
    result: Any = None  # the handler's return value, decoded from JSON, when ok
    error: dict[str, Any] | None = None  # errorType, errorMessage, stackTrace


@dataclass(frozen=True)
class FunctionStats:
    invocations: int = 0
    errors: int = 0  # including timeouts
    timeouts: int = 0
    deleted: int = 0  # SQS messages deleted after success


class _Instance:
    """One execution environment: a process that imports the handler once and stays warm.

    It is started on first use (a cold start) and replaced after a timeout or a crash.
    """

    def __init__(self, config: RuntimeConfig, init_timeout_s: float) -> None:
        self._config = config
        self._init_timeout_s = init_timeout_s
        self._process: Any = None
        self._conn: Any = None
        self.lock = threading.Lock()  # held while invoking, so close() knows it is busy

    def invoke(self, event: Any, timeout_s: float) -> Invocation:
        request_id = str(uuid.uuid4())
        try:
            if self._process is None or not self._process.is_alive():
                self._start()
            deadline_ms = int((time.time() + timeout_s) * 1000)
            # Held here: kill() from another thread (a test, close()) clears self._conn.
            conn = self._conn
            conn.send((json.dumps(event), request_id, deadline_ms))
            reply = conn.recv() if conn.poll(timeout_s) else None
        except (OSError, EOFError) as e:  # the process died, did not start, or close() killed it
            self.kill()
            error = {"errorType": "Runtime.ExitError", "errorMessage": f"process ended: {e!r}"}
            return Invocation(request_id, "error", error=error)
        if reply is None:
            self.kill()
            self._log(
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} "
                f"Task timed out after {timeout_s:.2f} seconds"
            )
            return Invocation(request_id, "timeout")
        status, payload = reply
        if status == "ok":
            return Invocation(request_id, "ok", result=json.loads(payload))
        return Invocation(request_id, "error", error=payload)

    @property
    def warm(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return None if self._process is None else int(self._process.pid)

    def warm_up(self) -> None:
        """Start the process now (an init that fails is retried on first use)."""
        with self.lock:
            if not self.warm:
                try:
                    self._start()
                except (OSError, EOFError, TimeoutError) as e:
                    self.kill()
                    self._log(f"INIT failed while pre-warming: {e!r}")

    def _start(self) -> None:
        self.kill()
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=serve, args=(self._config, child), name=self._config.function_name, daemon=True
        )
        try:
            with _main_module_hidden():
                process.start()
        finally:
            child.close()  # the child holds its own copy; ours would hide its death from poll()
        self._process, self._conn = process, parent
        if not parent.poll(self._init_timeout_s):
            raise TimeoutError(f"init took over {self._init_timeout_s} s")
        parent.recv()  # "ready"

    def _log(self, line: str) -> None:
        with open(self._config.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def kill(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None:
            process.kill()
            process.join()
        if conn is not None:
            conn.close()

    def close(self, grace_s: float) -> None:
        """Let the process exit; one still busy after `grace_s` is killed mid-invocation."""
        if not self.lock.acquire(timeout=grace_s):
            process = self._process
            if process is not None:
                process.kill()  # the invoking thread sees the pipe close and cleans up
            self.lock.acquire()
        try:
            if self._process is not None and self._process.is_alive():
                with contextlib.suppress(OSError):  # it may die just now; kill() tidies up
                    self._conn.send(None)
                    self._process.join(timeout=5)
            self.kill()
        finally:
            self.lock.release()


@dataclass
class _Share:
    """How many batches of one event source may run at once (its MaximumConcurrency), and do."""

    allowed: int
    running: int = 0


class _Pool:
    """A function's execution environments. A free one goes to the most urgent waiter (lowest
    rank, then first come) whose event source may run one more batch; a warm one, the most
    recently used first, before a cold one."""

    def __init__(self, instances: list[_Instance]) -> None:
        self.instances = instances
        self._idle = list(instances)  # the most recently released last
        self._waiting: list[tuple[int, int, _Share | None]] = []  # (rank, ticket, share)
        self._tickets = itertools.count()
        self._changed = threading.Condition()

    def acquire(
        self, timeout_s: float | None, rank: int = 0, share: _Share | None = None
    ) -> _Instance | None:
        me = (rank, next(self._tickets), share)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._changed:
            self._waiting.append(me)
            try:
                while not (self._idle and self._next() is me):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._changed.wait(left)
                if share is not None:
                    share.running += 1
                warm = [i for i, instance in enumerate(self._idle) if instance.warm]
                instance = self._idle.pop(warm[-1] if warm else -1)
            finally:
                self._waiting.remove(me)
                self._changed.notify_all()
        instance.lock.acquire()
        return instance

    def _next(self) -> tuple[int, int, _Share | None] | None:
        """The waiter served next: the most urgent whose source is under its concurrency."""
        eligible = [w for w in self._waiting if w[2] is None or w[2].running < w[2].allowed]
        return min(eligible, key=lambda w: w[:2], default=None)

    def release(self, instance: _Instance, share: _Share | None = None) -> None:
        instance.lock.release()
        with self._changed:
            if share is not None:
                share.running -= 1
            self._idle.append(instance)
            self._changed.notify_all()

    @contextmanager
    def lease(self) -> Iterator[_Instance]:
        instance = self.acquire(None)
        assert instance is not None
        try:
            yield instance
        finally:
            self.release(instance)


class FunctionHost:
    """Hosts every function of a stack that has SQS or HttpApi events.

    concurrency: processes per function at most (an int for all, or logical id -> int; missing
        ids get 2). An SQS function gets min(this, sum of its sources' MaximumConcurrency).
    extra_env: added to every function's environment (wins over the template's).
    poll_wait_s: each source's long-poll wait; it bounds how long stop() takes.
    prewarm: start every process when the host starts (in parallel; start() returns once all
        are ready) instead of on first use.
    """

    def __init__(
        self,
        stack: Stack,
        log_dir: Path,
        *,
        concurrency: int | Mapping[str, int] = 2,
        extra_env: Mapping[str, str] | None = None,
        echo_logs: bool = False,
        poll_wait_s: int = 1,
        init_timeout_s: float = 60.0,
        shutdown_grace_s: float = 5.0,
        prewarm: bool = False,
    ) -> None:
        self.stack = stack
        self.log_dir = log_dir
        self._poll_wait_s = poll_wait_s
        self._prewarm = prewarm
        self._shutdown_grace_s = shutdown_grace_s
        self._stopping = threading.Event()
        self._stats: dict[str, FunctionStats] = {}
        self._stats_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._executors: list[ThreadPoolExecutor] = []
        self.pools: dict[str, _Pool] = {}
        log_dir.mkdir(parents=True, exist_ok=True)
        # Every function gets processes: SQS-fed ones are polled, the rest (the HTTP API, the
        # scheduled cache warmer) run when `invoke` is called.
        for fn in stack.functions.values():
            cap = concurrency if isinstance(concurrency, int) else concurrency.get(fn.logical_id, 2)
            config = self._runtime_config(fn, dict(extra_env or {}), echo_logs)
            self.pools[fn.logical_id] = _Pool(
                [_Instance(config, init_timeout_s) for _ in range(process_count(fn, cap))]
            )
            self._stats[fn.logical_id] = FunctionStats()

    def log_path(self, logical_id: str) -> Path:
        return self.log_dir / f"{logical_id}.log"

    def _runtime_config(
        self, fn: FunctionSpec, extra_env: dict[str, str], echo: bool
    ) -> RuntimeConfig:
        endpoint: Endpoint = self.stack.endpoint
        environment = {
            **{k: os.environ[k] for k in _PASSTHROUGH if k in os.environ},
            "POWERTOOLS_TRACE_DISABLED": "true",  # there is no X-Ray daemon locally
            **fn.environment,
            # Variables the Lambda runtime sets; the template cannot override them there either.
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{fn.logical_id}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
            "LAMBDA_TASK_ROOT": str(fn.code_dir),
            "_HANDLER": fn.handler,
            "TZ": ":UTC",
            **endpoint.environment(),
            **extra_env,
        }
        return RuntimeConfig(
            function_name=fn.name,
            function_arn=fn.arn,
            memory_mb=fn.memory_mb,
            handler=fn.handler,
            code_dir=str(fn.code_dir),
            layer_dirs=tuple(str(d) for d in fn.layer_dirs),
            environment=environment,
            log_path=str(self.log_path(fn.logical_id)),
            echo_prefix=f"[{fn.logical_id}] " if echo else None,
        )

    # -- lifecycle

    def start(self) -> None:
        instances = [i for pool in self.pools.values() for i in pool.instances]
        if self._prewarm and instances:
            with ThreadPoolExecutor(len(instances), thread_name_prefix="prewarm") as starter:
                wait([starter.submit(i.warm_up) for i in instances])
        for lid, pool in self.pools.items():
            fn = self.stack.functions[lid]
            sources = sorted(
                (s for s in fn.sqs_sources if s.event.enabled),
                key=lambda s: -(s.event.maximum_concurrency or 0),
            )
            if not sources:
                continue
            executor = ThreadPoolExecutor(len(pool.instances), thread_name_prefix=lid)
            self._executors.append(executor)
            for rank, source in enumerate(sources):
                thread = threading.Thread(
                    target=self._poll,
                    args=(fn, source, rank, pool, executor),
                    name=f"{lid}-{source.queue_url.rsplit('/', 1)[-1]}-poller",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        deadline = time.monotonic() + self._shutdown_grace_s  # one grace period for all
        for pool in self.pools.values():
            for instance in pool.instances:
                instance.close(max(0.0, deadline - time.monotonic()))
        for executor in self._executors:
            executor.shutdown(wait=True)

    def __enter__(self) -> FunctionHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- invoking

    def invoke(self, logical_id: str, event: Any) -> Invocation:
        """Invoke a function synchronously (the API gateway's path), waiting for a free process."""
        fn = self.stack.functions[logical_id]
        with self.pools[logical_id].lease() as instance:
            invocation = instance.invoke(event, fn.timeout_s)
        self._count(logical_id, invocation, deleted=0)
        return invocation

    def stats(self, logical_id: str) -> FunctionStats:
        with self._stats_lock:
            return self._stats[logical_id]

    def _count(self, logical_id: str, invocation: Invocation, deleted: int) -> None:
        with self._stats_lock:
            s = self._stats[logical_id]
            self._stats[logical_id] = replace(
                s,
                invocations=s.invocations + 1,
                errors=s.errors + (invocation.outcome != "ok"),
                timeouts=s.timeouts + (invocation.outcome == "timeout"),
                deleted=s.deleted + deleted,
            )

    # -- SQS event sources

    def _poll(
        self,
        fn: FunctionSpec,
        source: BoundSqsSource,
        rank: int,
        pool: _Pool,
        executor: ThreadPoolExecutor,
    ) -> None:
        """One event source: receive batches for its free concurrency and one more, hand each
        to a process as the pool allows (it serves sources in the order of `rank`, each up to
        its MaximumConcurrency), repeat. The one more waits in line, so that a busy source's
        next batch is there when its process frees, however slow a receive is."""
        sqs = self.stack.endpoint.client("sqs")
        processes = len(pool.instances)
        share = _Share(min(processes, source.event.maximum_concurrency or processes))
        size = min(source.event.batch_size, _MAX_RECEIVE)
        while not self._stopping.is_set():
            wanted = max(1, share.allowed + 1 - share.running)
            try:
                messages = self._receive(sqs, source, min(wanted * size, _MAX_RECEIVE))
            except Exception:
                log.exception("%s: receiving from %s failed", fn.logical_id, source.queue_url)
                self._stopping.wait(1)
                continue
            for start in range(0, len(messages), size):
                instance = None
                while instance is None and not self._stopping.is_set():
                    instance = pool.acquire(0.5, rank, share)
                if instance is None:  # stopping: the messages come back after their timeout
                    return
                batch = messages[start : start + size]
                future = executor.submit(
                    self._run_batch, sqs, fn, pool, instance, share, source, batch
                )
                future.add_done_callback(_log_failure)

    def _receive(self, sqs: Any, source: BoundSqsSource, count: int) -> list[dict[str, Any]]:
        if self._stopping.is_set():
            return []
        messages: list[dict[str, Any]] = sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._poll_wait_s,
            # "All" includes ApproximateReceiveCount, which handlers use to give up.
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return messages

    def _run_batch(
        self,
        sqs: Any,
        fn: FunctionSpec,
        pool: _Pool,
        instance: _Instance,
        share: _Share,
        source: BoundSqsSource,
        messages: list[dict[str, Any]],
    ) -> None:
        try:
            event = sqs_event(source, messages, self.stack.pseudo.region)
            invocation = instance.invoke(event, fn.timeout_s)
        finally:
            pool.release(instance, share)
        done = succeeded_messages(source, messages, invocation)
        for start in range(0, len(done), _MAX_RECEIVE):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                for i, m in enumerate(done[start : start + _MAX_RECEIVE])
            ]
            failed = sqs.delete_message_batch(QueueUrl=source.queue_url, Entries=entries).get(
                "Failed"
            )
            if failed:
                log.warning("%s: could not delete %s", fn.logical_id, failed)
        if invocation.outcome != "ok":
            log.info("%s: %s %s", fn.logical_id, invocation.outcome, invocation.error or "")
        self._count(fn.logical_id, invocation, deleted=len(done))


def _log_failure(future: Future[None]) -> None:
    error = future.exception()
    if error is not None:
        log.error("handling a batch failed", exc_info=error)


def process_count(fn: FunctionSpec, cap: int) -> int:
    """How many processes a function gets: its sources' MaximumConcurrency, at most `cap`."""
    if not fn.sqs_sources:
        return max(1, cap)
    # Without ScalingConfig a source may scale far; the local cap decides then.
    wanted = sum(s.event.maximum_concurrency or cap for s in fn.sqs_sources)
    return max(1, min(wanted, cap))


def sqs_event(
    source: BoundSqsSource, messages: list[dict[str, Any]], region: str
) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping builds from received messages."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {
                    name: _message_attribute(value)
                    for name, value in m.get("MessageAttributes", {}).items()
                },
                "md5OfBody": m["MD5OfBody"],
                **(
                    {"md5OfMessageAttributes": m["MD5OfMessageAttributes"]}
                    if "MD5OfMessageAttributes" in m
                    else {}
                ),
                "eventSource": "aws:sqs",
                "eventSourceARN": source.queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    # The event spells the API's attribute fields in camelCase; binary values are base64.
    converted: dict[str, Any] = {
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": [
            base64.b64encode(b).decode() for b in value.get("BinaryListValues", [])
        ],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def succeeded_messages(
    source: BoundSqsSource, messages: list[dict[str, Any]], invocation: Invocation
) -> list[dict[str, Any]]:
    """The messages Lambda deletes after this invocation.

    With ReportBatchItemFailures, an invalid response (an unknown or empty itemIdentifier, or
    a result that is not an object) fails the whole batch, as documented for Lambda.
    """
    if invocation.outcome != "ok":
        return []
    result = invocation.result
    if not source.event.report_batch_item_failures or result is None:
        return messages
    if not isinstance(result, dict):
        return []
    failures = result.get("batchItemFailures") or []
    ids = {m["MessageId"] for m in messages}
    try:
        failed = {f["itemIdentifier"] for f in failures}
    except (KeyError, TypeError):
        return []
    if not failed <= ids:
        return []
    return [m for m in messages if m["MessageId"] not in failed]
