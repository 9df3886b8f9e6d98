"""The function host on a tiny template (on moto): warm processes, batches, errors, timeouts.

The template is tiny so a function can have a 1-second timeout and a batch size above one,
which the real template does not offer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from localcloud.emulators import MotoEmulator
from localcloud.function_host import FunctionHost, _Pool, _Share
from localcloud.provision import Stack, provision

T = TypeVar("T")

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
Globals:
  Function:
    Runtime: python3.12
    Timeout: 1
    Environment:
      Variables:
        GREETING: !Ref Greeting
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt JobsDead.Arn
        maxReceiveCount: 2
  JobsDead:
    Type: AWS::SQS::Queue
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fn/
      Handler: app.handler
      MemorySize: 256
      Environment:
        Variables:
          QUEUE: !Ref Jobs
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
        Urgent:
          Type: SQS
          Properties:
            Queue: !GetAtt UrgentJobs.Arn
            BatchSize: 1
            ScalingConfig:
              MaximumConcurrency: 2
  UrgentJobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
"""

# Keeps a module-level counter (it must survive between invocations of one process), prints
# to its log, and misbehaves as each message asks.
HANDLER = """
import json, os, pathlib, sys, time

CALLS = 0


def handler(event, context):
    global CALLS
    CALLS += 1
    bodies = [r["body"] for r in event["Records"]]
    counts = [r["attributes"]["ApproximateReceiveCount"] for r in event["Records"]]
    record = {"pid": os.getpid(), "calls": CALLS, "bodies": bodies, "counts": counts,
              "greeting": os.environ["GREETING"], "queue": os.environ["QUEUE"],
              "cwd": os.getcwd(), "parent_main": getattr(sys.modules["__main__"], "__file__", None)}
    path = pathlib.Path(os.environ["RECORD_DIR"]) / f"{time.time_ns()}.json"
    path.write_text(json.dumps(record))
    print("handled", bodies)
    if "sleep" in bodies:
        time.sleep(30)
    if "raise" in bodies:
        raise RuntimeError("asked to raise")
    return {"batchItemFailures": [
        {"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]}
"""


def wait_for(probe: Callable[[], T | None], timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {probe}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(HANDLER)
    with MotoEmulator() as moto:
        yield provision(
            tmp_path / "template.yaml",
            moto.endpoint,
            stack_name="host",
            parameter_overrides={"Greeting": "hi"},
        )


@pytest.fixture
def records(tmp_path: Path) -> Path:
    path = tmp_path / "records"
    path.mkdir()
    return path


def host_for(
    stack: Stack, records: Path, tmp_path: Path, echo: bool = False, **options: Any
) -> FunctionHost:
    return FunctionHost(
        stack,
        tmp_path / "logs",
        concurrency=1,
        extra_env={"RECORD_DIR": str(records)},
        echo_logs=echo,
        **options,
    )


def read(records: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]


def send(stack: Stack, *bodies: str, queue: str = "Jobs") -> None:
    sqs = stack.endpoint.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=stack.ref(queue), MessageBody=body)


def dead_letters(stack: Stack) -> list[str]:
    sqs = stack.endpoint.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=stack.ref("JobsDead"), MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", [])
    return sorted(m["Body"] for m in messages)


def test_a_process_stays_warm_and_keeps_module_state(
    stack: Stack, records: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with host_for(stack, records, tmp_path, echo=True) as host:
        for n in range(3):
            send(stack, f"job {n}")
            wait_for(lambda n=n: len(read(records)) == n + 1)  # type: ignore[misc]
    stats = host.stats("Fn")  # counted once stop() has let the last invocation finish

    calls = read(records)
    assert {c["pid"] for c in calls} == {calls[0]["pid"]}
    assert [c["calls"] for c in calls] == [1, 2, 3]
    assert calls[0]["greeting"] == "hi"  # Globals + parameter override
    assert calls[0]["queue"] == stack.ref("Jobs")
    assert calls[0]["cwd"] == str(stack.functions["Fn"].code_dir)
    # As in Lambda, the process holds its handler's imports, not its parent's (here pytest's).
    assert calls[0]["parent_main"] is None
    assert (stats.invocations, stats.errors, stats.deleted) == (3, 0, 3)
    log = (tmp_path / "logs" / "Fn.log").read_text()
    assert "handled ['job 0']" in log
    assert log.count("START RequestId: ") == 3
    assert log.count("REPORT RequestId: ") == 3
    assert "[Fn] handled ['job 2']" in capfd.readouterr().err  # echo_logs


def test_only_reported_failures_of_a_batch_come_back(
    stack: Stack, records: Path, tmp_path: Path
) -> None:
    send(stack, "a", "fail", "b", "c")  # before the host starts: one batch of four
    with host_for(stack, records, tmp_path):
        assert wait_for(lambda: dead_letters(stack)) == ["fail"]

    calls = read(records)
    assert sorted(calls[0]["bodies"]) == ["a", "b", "c", "fail"]
    assert all(c["bodies"] == ["fail"] for c in calls[1:])
    assert [c["counts"] for c in calls[1:]] == [["2"]]  # maxReceiveCount is 2


def test_an_exception_deletes_nothing(stack: Stack, records: Path, tmp_path: Path) -> None:
    send(stack, "raise")
    with host_for(stack, records, tmp_path) as host:
        assert wait_for(lambda: dead_letters(stack)) == ["raise"]
    stats = host.stats("Fn")  # counted once stop() has let the last invocation finish

    assert [c["counts"] for c in read(records)] == [["1"], ["2"]]
    assert stats.errors == 2 and stats.deleted == 0
    log = (tmp_path / "logs" / "Fn.log").read_text()
    assert "[ERROR] RuntimeError: asked to raise" in log


def test_a_timeout_kills_the_process_and_a_new_one_takes_over(
    stack: Stack, records: Path, tmp_path: Path
) -> None:
    send(stack, "sleep")
    with host_for(stack, records, tmp_path) as host:
        assert wait_for(lambda: dead_letters(stack)) == ["sleep"]
        send(stack, "after")
        wait_for(lambda: len(read(records)) == 3)
    stats = host.stats("Fn")  # counted once stop() has let the last invocation finish

    first, second, after = read(records)
    assert first["counts"] == ["1"] and second["counts"] == ["2"]
    assert len({first["pid"], second["pid"], after["pid"]}) == 3  # a fresh process each time
    assert [c["calls"] for c in (first, second, after)] == [1, 1, 1]
    assert stats.timeouts == 2
    log = (tmp_path / "logs" / "Fn.log").read_text()
    assert log.count("Task timed out after 1.00 seconds") == 2


def test_every_queue_is_long_polled_by_its_own_poller(
    stack: Stack, records: Path, tmp_path: Path
) -> None:
    # One poller long-polling the first queue would leave the other's message for 20 s.
    with host_for(stack, records, tmp_path, poll_wait_s=20, prewarm=True):
        time.sleep(0.5)  # both pollers are in their long polls now
        send(stack, "normal")
        wait_for(lambda: read(records), timeout_s=10)
        send(stack, "urgent", queue="UrgentJobs")
        wait_for(lambda: len(read(records)) == 2, timeout_s=10)
    assert [c["bodies"] for c in read(records)] == [["normal"], ["urgent"]]


def test_prewarm_starts_every_process_before_the_first_message(
    stack: Stack, records: Path, tmp_path: Path
) -> None:
    host = host_for(stack, records, tmp_path, prewarm=True)
    assert not any(i.warm for i in host.pools["Fn"].instances)
    with host:
        assert all(i.warm for i in host.pools["Fn"].instances)
        started = {i.pid for i in host.pools["Fn"].instances}
        send(stack, "first")
        wait_for(lambda: read(records))
    assert read(records)[0]["pid"] in started  # a process started before the message came


class _Environment:
    """What _Pool needs of an execution environment: whether it is warm, and its lock."""

    def __init__(self, name: str, warm: bool) -> None:
        self.name, self.warm, self.lock = name, warm, threading.Lock()


def test_the_pool_prefers_warm_environments_and_serves_waiters_by_rank() -> None:
    cold, warm = _Environment("cold", False), _Environment("warm", True)
    pool = _Pool([warm, cold])  # type: ignore[list-item]
    assert pool.acquire(0) is warm
    taken = pool.acquire(0)
    assert taken is cold and pool.acquire(0.05) is None

    served: list[str] = []

    def waiter(rank: int, name: str) -> None:
        instance = pool.acquire(5, rank)
        assert instance is not None
        served.append(name)
        pool.release(instance)  # type: ignore[arg-type]

    threads = [threading.Thread(target=waiter, args=(2, "low"))]
    threads[0].start()
    time.sleep(0.2)  # the low-ranked waiter queues first
    threads.append(threading.Thread(target=waiter, args=(0, "high")))
    threads[1].start()
    time.sleep(0.2)
    pool.release(cold)  # type: ignore[arg-type]
    for t in threads:
        t.join()
    assert served == ["high", "low"]


def test_a_source_at_its_maximum_concurrency_lets_a_lower_one_through() -> None:
    first, second = _Environment("a", True), _Environment("b", True)
    pool = _Pool([first, second])  # type: ignore[list-item]
    urgent = _Share(allowed=1)
    running = pool.acquire(0, rank=0, share=urgent)
    assert running is not None and urgent.running == 1
    # The urgent source's next batch must wait for its own to finish; the bulk one may run.
    assert pool.acquire(0.05, rank=0, share=urgent) is None
    bulk = pool.acquire(0, rank=2, share=_Share(allowed=5))
    assert bulk is not None
    pool.release(running, urgent)  # type: ignore[arg-type]
    assert urgent.running == 0 and pool.acquire(0, rank=0, share=urgent) is running
