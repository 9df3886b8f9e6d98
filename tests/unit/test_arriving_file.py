"""ArrivingFile: a file read while a writer still fills it (the splitter's download)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sttpipe.adapters.arriving import ArrivingFile

DATA = bytes(range(256)) * 64  # 16 KiB
TAIL_FROM = len(DATA) - 1024


@pytest.fixture
def arriving(tmp_path: Path) -> Iterator[ArrivingFile]:
    path = tmp_path / "upload.wav"
    path.write_bytes(b"\0" * len(DATA))
    with open(path, "r+b") as out:
        out.seek(TAIL_FROM)
        out.write(DATA[TAIL_FROM:])
    with ArrivingFile(str(path), len(DATA), tail_from=TAIL_FROM) as file:
        yield file


def write_head(file: ArrivingFile, upto: int, start: int = 0) -> None:
    with open(file.name, "r+b") as out:
        out.seek(start)
        out.write(DATA[start:upto])
    file.arrived(DATA[start:upto])


def read_later(file: ArrivingFile, size: int) -> tuple[threading.Thread, list[bytes]]:
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(file.read(size)))
    reader.start()
    return reader, got


def test_the_tail_and_the_size_are_there_before_the_head(arriving: ArrivingFile) -> None:
    assert arriving.seek(0, os.SEEK_END) == len(DATA)
    arriving.seek(-100, os.SEEK_END)
    assert arriving.read(100) == DATA[-100:]
    assert arriving.sha256 is None


def test_a_read_waits_for_its_bytes_and_no_more(arriving: ArrivingFile) -> None:
    reader, got = read_later(arriving, 4096)
    write_head(arriving, 2048)
    reader.join(0.2)
    assert reader.is_alive()  # half of what it asked for is not enough
    write_head(arriving, 8192, start=2048)
    reader.join(5)
    assert got == [DATA[:4096]]  # there once its 4 KiB are, not after the whole file


def test_a_read_across_into_the_tail_waits_for_the_head_only(arriving: ArrivingFile) -> None:
    arriving.seek(TAIL_FROM - 10)
    reader, got = read_later(arriving, 100)
    reader.join(0.2)
    assert reader.is_alive()
    write_head(arriving, TAIL_FROM)
    reader.join(5)
    assert got == [DATA[TAIL_FROM - 10 : TAIL_FROM + 90]]


def test_the_hash_is_the_whole_files_once_all_arrived(arriving: ArrivingFile) -> None:
    write_head(arriving, TAIL_FROM)
    assert arriving.sha256 is None
    arriving.finished(DATA[TAIL_FROM:])
    assert arriving.sha256 == hashlib.sha256(DATA).hexdigest()
    assert arriving.wait_until_complete() == arriving.sha256
    assert arriving.read() == DATA


def test_the_writers_error_is_raised_in_the_waiting_reader(arriving: ArrivingFile) -> None:
    errors: list[BaseException] = []

    def read() -> None:
        try:
            arriving.read(100)
        except ConnectionError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.05)
    arriving.failed(ConnectionError("reset"))
    reader.join(5)
    assert [str(e) for e in errors] == ["reset"]
    with pytest.raises(ConnectionError):
        arriving.wait_until_complete()


def test_waiting_for_a_file_that_is_all_tail_waits_for_its_writer(tmp_path: Path) -> None:
    # A small object is fetched whole as its "tail": its bytes are there before the writer has
    # said it is finished (and the hash is known).
    path = tmp_path / "small.wav"
    path.write_bytes(DATA)
    with ArrivingFile(str(path), len(DATA), tail_from=0) as file:
        hashes: list[str] = []
        waiter = threading.Thread(target=lambda: hashes.append(file.wait_until_complete()))
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()
        file.finished(DATA)
        waiter.join(5)
        assert hashes == [hashlib.sha256(DATA).hexdigest()]
