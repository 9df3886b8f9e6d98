"""The in-memory fakes keep the real adapters' rules. (InMemoryJobRepository runs the same
contract tests as PostgresJobRepository, in tests/integration/test_postgres_repository.py.)"""

from __future__ import annotations

import json
import os

import pytest
from sttpipe_testing.fakes import (
    FakeTranscriber,
    InMemoryObjectStore,
    InMemoryWorkflow,
    UploadRejected,
)

from sttpipe.adapters.stepfunctions import MAX_CAUSE_CHARS, MAX_ERROR_CHARS, execution_name
from sttpipe.domain.transcripts import RelativeSegment, Transcription
from sttpipe.ports import ObjectNotFound, TaskNoLongerWaiting
from sttpipe.speech.base import TransientSpeechError

# ---- object store ---------------------------------------------------------------------------


def test_object_store_round_trip_and_missing_keys() -> None:
    store = InMemoryObjectStore()
    store.put_bytes("a/b.json", b"{}", "application/json")
    assert store.get_bytes("a/b.json") == b"{}"
    assert store.content_type("a/b.json") == "application/json"
    assert store.size("a/b.json") == 2
    assert store.size("nope") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("nope")
    with pytest.raises(ObjectNotFound), store.download("nope"):
        pass


def test_download_yields_a_named_file_removed_afterwards() -> None:
    store = InMemoryObjectStore()
    store.put_bytes("u/talk.ogg", b"OggS" * 100, "audio/ogg")
    with store.download("u/talk.ogg") as fileobj:
        path = fileobj.name
        assert path.endswith(".ogg")
        assert fileobj.read() == b"OggS" * 100
    assert not os.path.exists(path)


def test_presigned_post_form_enforces_its_policy() -> None:
    store = InMemoryObjectStore()
    form = store.presigned_post("uploads/j/a.wav", "audio/wav", 10, 60)
    with pytest.raises(UploadRejected, match="size"):
        store.post_form(form["fields"], b"")
    with pytest.raises(UploadRejected, match="size"):
        store.post_form(form["fields"], b"x" * 11)
    with pytest.raises(UploadRejected, match="key"):
        store.post_form({**form["fields"], "key": "uploads/other.wav"}, b"x")
    with pytest.raises(UploadRejected, match="Content-Type"):
        store.post_form({**form["fields"], "Content-Type": "text/html"}, b"x")
    assert store.size("uploads/j/a.wav") is None
    store.post_form(form["fields"], b"x" * 10)
    assert store.get_bytes("uploads/j/a.wav") == b"x" * 10


def test_expired_form_is_rejected() -> None:
    store = InMemoryObjectStore()
    form = store.presigned_post("k", "audio/wav", 10, -1)
    with pytest.raises(UploadRejected, match="expired"):
        store.post_form(form["fields"], b"x")


# ---- workflow -------------------------------------------------------------------------------


def test_start_is_idempotent_per_job() -> None:
    workflow = InMemoryWorkflow()
    first = workflow.start("job-1", '{"n": 1}')
    assert workflow.start("job-1", '{"n": 2}') == first
    assert first.endswith(":execution:memory:" + execution_name("job-1"))
    assert workflow.executions == {first: '{"n": 1}'}


def test_a_token_is_answered_once() -> None:
    workflow = InMemoryWorkflow()
    token = workflow.open_task()
    workflow.heartbeat(token)
    workflow.heartbeat(token)
    workflow.succeed(token, '{"ok": true}')
    assert workflow.heartbeats[token] == 2
    assert workflow.answers[token].succeeded and workflow.answers[token].output == '{"ok": true}'
    with pytest.raises(TaskNoLongerWaiting):
        workflow.fail(token, "E", "late")
    with pytest.raises(TaskNoLongerWaiting):
        workflow.heartbeat(token)


def test_timed_out_and_unknown_tokens_are_no_longer_waiting() -> None:
    workflow = InMemoryWorkflow()
    token = workflow.open_task("given-token")
    workflow.time_out(token)
    with pytest.raises(TaskNoLongerWaiting):
        workflow.succeed(token, "{}")
    with pytest.raises(TaskNoLongerWaiting):
        workflow.heartbeat("never-opened")
    assert workflow.answers == {}


def test_fail_truncates_like_step_functions() -> None:
    workflow = InMemoryWorkflow()
    token = workflow.open_task()
    workflow.fail(token, "E" * 300, "c" * 40_000)
    answer = workflow.answers[token]
    assert not answer.succeeded
    assert answer.error is not None and len(answer.error) == MAX_ERROR_CHARS
    assert answer.cause is not None and len(answer.cause) == MAX_CAUSE_CHARS
    assert answer.cause.endswith("…")


def test_succeed_refuses_output_that_is_not_json() -> None:
    workflow = InMemoryWorkflow()
    token = workflow.open_task()
    with pytest.raises(json.JSONDecodeError):
        workflow.succeed(token, "not json")
    assert token not in workflow.answers


# ---- transcriber ----------------------------------------------------------------------------


def test_fake_transcriber_replays_responses_then_default() -> None:
    full = Transcription(text="b", segments=(RelativeSegment(0.0, 1.0, "b"),), attempts=2)
    fake = FakeTranscriber(
        ["a", TransientSpeechError("429", status_code=429), full], default="z", language="ru"
    )
    assert fake.transcribe(b"1", "0.flac", language=None) == Transcription(text="a", language="ru")
    with pytest.raises(TransientSpeechError):
        fake.transcribe(b"2", "1.flac", language="en", prompt="p", remaining_s=5.0)
    assert fake.transcribe(b"3", "2.flac", language="en") is full
    assert fake.transcribe(b"4", "3.flac", language="en").text == "z"
    assert [c.filename for c in fake.calls] == ["0.flac", "1.flac", "2.flac", "3.flac"]
    assert (fake.calls[1].prompt, fake.calls[1].remaining_s) == ("p", 5.0)


def test_fake_transcriber_without_default_fails_loudly() -> None:
    fake = FakeTranscriber(["only"])
    fake.transcribe(b"", "a.flac", language=None)
    with pytest.raises(AssertionError, match="no response left"):
        fake.transcribe(b"", "b.flac", language=None)
