"""`stt`'s command line: -v on either side of the command, and one line saying what went
wrong, never a Python traceback, when the machine is not as it needs (PostgreSQL unreachable,
a port taken, a job that outlasts --timeout, Ctrl-C).
"""

from __future__ import annotations

import argparse
import errno
import io
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localcloud import cli
from localcloud.client import CountingReader, JobResult, JobTimeout
from localcloud.services import ServiceUnavailable


@pytest.fixture
def raising(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Make `stt transcribe` raise what the test puts in the list."""
    raised: list[BaseException] = []

    def run(args: argparse.Namespace) -> int:
        raise raised[0]

    monkeypatch.setattr(cli, "cmd_transcribe", run)
    yield raised


@pytest.mark.parametrize(
    ("exc", "code", "says"),
    [
        (ServiceUnavailable("PostgreSQL is not reachable at x"), 1, "PostgreSQL is not reachable"),
        (JobTimeout("job j still TRANSCRIBING after 5 s"), 1, "still TRANSCRIBING"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (OSError(errno.EADDRINUSE, "Address already in use"), 1, "already in use"),
    ],
)
def test_known_failures_end_with_one_line_and_no_traceback(
    raising: list[BaseException],
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    says: str,
) -> None:
    raising.append(exc)
    assert cli.main(["transcribe", __file__]) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert err.startswith("stt: ") and err.count("\n") == 1


def test_a_port_in_use_for_stt_up_is_reported_with_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["up", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port}" in err and "--port" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "verbose"),
    [
        (["transcribe", "talk.mp3", "-v"], True),
        (["-v", "transcribe", "talk.mp3"], True),
        (["transcribe", "talk.mp3"], False),
        (["cache", "stats", "--verbose"], True),
        (["demo"], False),
    ],
)
def test_verbose_goes_before_or_after_the_command(argv: list[str], verbose: bool) -> None:
    assert cli.build_parser().parse_args(argv).verbose is verbose


def test_each_input_is_named_after_itself_and_repeats_are_numbered() -> None:
    assert cli.output_names([Path("a/talk.mp3"), Path("b/talk.wav"), Path("c.m4a")]) == [
        "talk",
        "talk-2",
        "c",
    ]


def test_version_and_several_files_with_one_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("stt ")
    args = cli.build_parser().parse_args(["transcribe", "a.mp3", "b.mp3", "--output-format", "srt"])
    assert (args.files, args.output_format) == ([Path("a.mp3"), Path("b.mp3")], "srt")


def test_an_upload_read_through_the_counter_keeps_its_length(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    path.write_bytes(bytes(200_000))
    counted: list[int] = []
    with path.open("rb") as file:
        reader = CountingReader(file, counted.append)
        assert httpx._utils.peek_filelike_length(reader) == 200_000  # a Content-Length, not chunks
        while reader.read(65_536):
            pass
    assert sum(counted) == 200_000


def job_at(status: str, finished: int, total: int) -> dict[str, Any]:
    progress = {"chunks_total": total, "chunks_finished": finished}
    return {"job_id": "0123456789abcdef", "status": status, "progress": progress, "chunks": []}


def test_a_terminal_gets_a_bar_of_chunks_and_a_log_gets_lines() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    show = cli.progress_for(screen)
    for job in (job_at("SPLITTING", 0, 0), job_at("TRANSCRIBING", 2, 4), job_at("COMPLETED", 4, 4)):
        show(job)
    assert "01234567 COMPLETED" in screen.getvalue() and "4/4" in screen.getvalue()
    assert isinstance(cli.progress_for(io.StringIO()), cli.ProgressPrinter)


def test_a_language_the_local_engine_cannot_hear_is_refused_before_any_cloud_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    recording = tmp_path / "talk.wav"
    recording.write_bytes(b"RIFF")
    assert cli.main(["transcribe", str(recording), "--language", "ru"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "English only" in err and "--api" in err


def test_an_unreachable_cache_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "STATE_FILE", tmp_path / "no-local-cloud-up.json")
    assert cli.main(["cache", "clear", "--redis-url", "redis://127.0.0.1:1/0"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("stt: the transcript cache is not reachable") and err.count("\n") == 1


def test_several_files_end_with_a_table_of_what_each_cost(tmp_path: Path) -> None:
    done = JobResult(
        "a" * 32,
        "COMPLETED",
        {
            "stats": {
                "duration_s": 62.4,
                "chunks": 3,
                "speech_api_calls": 2,
                "cache_hits": {"L2": 1},
            }
        },
        {"txt": tmp_path / "talk.txt", "srt": tmp_path / "talk.srt"},
        "hello",
    )
    known = JobResult(
        "b" * 32, "COMPLETED", {"stats": {"duration_s": 9, "upload_cache_hit": "L3"}}, {}, "hi"
    )
    failed = JobResult("c" * 32, "FAILED", {"failure_reason": "no audio"}, {}, "")
    table = cli.summary_table(
        [Path("talk.mp3"), Path("again.mp3"), Path("noise.bin")], [done, known, failed]
    ).splitlines()
    assert table[0].split() == [
        "FILE",
        "STATUS",
        "AUDIO",
        "CHUNKS",
        "API",
        "CALLS",
        "CACHED",
        "OUTPUT",
    ]
    assert table[1].split() == [
        "talk.mp3",
        "COMPLETED",
        "62",
        "s",
        "3",
        "2",
        "1",
        f"{tmp_path}/talk.*",
    ]
    assert "whole file" in table[2] and table[3].split()[:3] == ["noise.bin", "FAILED", "-"]
    column = table[0].index("STATUS")  # aligned: every status starts under its heading
    assert all(line[column:].startswith(("COMPLETED", "FAILED")) for line in table[1:])


def test_output_dir_is_whispers_name_for_out() -> None:
    args = cli.build_parser().parse_args(["transcribe", "a.mp3", "--output-dir", "subs"])
    assert args.out == Path("subs")
