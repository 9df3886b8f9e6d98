"""S3ObjectStore against moto: in process for the API calls, and over real HTTP (moto's threaded
server on loopback) for the pre-signed URLs, which only mean something when a client uses them."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterator

import boto3
import httpx
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from sttpipe.adapters.s3 import S3ObjectStore, default_s3_client, temp_suffix
from sttpipe.ports import ObjectNotFound

BUCKET = "sttpipe-test"


@pytest.fixture
def credentials(moto_env: None) -> Iterator[None]:
    # The container-wide client is built from the environment on first use: rebuild per test.
    default_s3_client.cache_clear()
    yield
    default_s3_client.cache_clear()


@pytest.fixture
def store(credentials: None) -> Iterator[S3ObjectStore]:
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield S3ObjectStore(BUCKET)


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def served_store(
    credentials: None, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> S3ObjectStore:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # as the local cloud sets it
    store = S3ObjectStore(BUCKET)
    default_s3_client().create_bucket(Bucket=BUCKET)
    return store


def test_a_conditional_put_stores_once_and_then_refuses(store: S3ObjectStore) -> None:
    assert store.put_bytes_if_absent("work/j/results/00001.json", b"first", "application/json")
    assert not store.put_bytes_if_absent("work/j/results/00001.json", b"second", "text/plain")
    assert store.get_bytes("work/j/results/00001.json") == b"first"


def test_put_get_size(store: S3ObjectStore) -> None:
    store.put_bytes("results/0.json", b'{"a": 1}', "application/json")
    assert store.get_bytes("results/0.json") == b'{"a": 1}'
    assert store.size("results/0.json") == 8
    assert store.size("results/missing.json") is None
    with pytest.raises(ObjectNotFound):
        store.get_bytes("results/missing.json")


def test_download_streams_into_a_temporary_file_that_is_removed(store: S3ObjectStore) -> None:
    data = os.urandom(1024) * (9 * 1024)  # 9 MiB: a tail, then the head in blocks
    store.put_bytes("uploads/job/talk.mp3", data, "audio/mpeg")
    with store.download("uploads/job/talk.mp3") as fileobj:
        path = fileobj.name
        assert path.endswith(".mp3") and fileobj.seek(0, os.SEEK_END) == len(data)
        fileobj.seek(0)
        assert fileobj.read() == data
        assert fileobj.wait_until_complete() == hashlib.sha256(data).hexdigest()
        assert os.path.getsize(path) == len(data)
    assert not os.path.exists(path)
    with pytest.raises(ObjectNotFound), store.download("uploads/job/none.wav"):
        pass


@pytest.mark.parametrize("size", [0, 1, 1 << 20, (1 << 20) + 1])
def test_download_of_objects_around_the_tails_size(store: S3ObjectStore, size: int) -> None:
    data = os.urandom(size)
    store.put_bytes("uploads/job/a.wav", data, "audio/wav")
    with store.download("uploads/job/a.wav") as fileobj:
        assert fileobj.read() == data
        assert fileobj.wait_until_complete() == hashlib.sha256(data).hexdigest()


def test_a_download_left_early_stops_fetching(store: S3ObjectStore) -> None:
    store.put_bytes("uploads/job/long.wav", os.urandom(24 << 20), "audio/wav")
    before = threading.active_count()
    with store.download("uploads/job/long.wav") as fileobj:
        assert len(fileobj.read(1000)) == 1000
    assert threading.active_count() == before  # the fetching thread ended with the context


@pytest.mark.parametrize(
    ("key", "suffix"),
    [("a/b/c.flac", ".flac"), ("a/b.dir/c", ""), ("a/c.tar.gz", ".gz"), ("x.m p3", "")],
)
def test_temp_suffix(key: str, suffix: str) -> None:
    assert temp_suffix(key) == suffix


def test_presigned_post_policy_pins_key_type_and_size(store: S3ObjectStore) -> None:
    form = store.presigned_post("uploads/j1/a.wav", "audio/wav", 1000, 900)
    assert form["fields"]["key"] == "uploads/j1/a.wav"
    assert form["fields"]["Content-Type"] == "audio/wav"
    policy = json.loads(base64.b64decode(form["fields"]["policy"]))
    conditions = policy["conditions"]
    assert {"key": "uploads/j1/a.wav"} in conditions
    assert {"bucket": BUCKET} in conditions
    assert {"Content-Type": "audio/wav"} in conditions
    assert ["content-length-range", 1, 1000] in conditions


def test_presigned_post_uploads_and_presigned_get_downloads(
    served_store: S3ObjectStore, moto_server: str
) -> None:
    form = served_store.presigned_post("uploads/j2/a.wav", "audio/wav", 1_000_000, 900)
    audio = b"RIFF" + os.urandom(2000)
    response = httpx.post(
        form["url"], data=form["fields"], files={"file": ("a.wav", audio, "audio/wav")}
    )
    assert response.status_code in (200, 204), response.text
    assert served_store.size("uploads/j2/a.wav") == len(audio)

    assert form["url"].startswith(moto_server)
    url = served_store.presigned_get("uploads/j2/a.wav", 60)
    assert url.startswith(moto_server) and "X-Amz-Signature=" in url  # SigV4
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200
    assert downloaded.content == audio
