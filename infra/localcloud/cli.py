"""`stt`: run recordings through the pipeline on a local cloud.

stt transcribe FILE... [--out DIR] [--output-format F] [--language L | --mixed-languages] ...
stt demo            the bundled sample, with its word error rate
stt up              keep a local cloud running (for a browser, or many `stt transcribe`)
stt rerun JOB_ID    transcribe a PARTIAL or FAILED job's failed chunks again (on `stt up`'s cloud)
stt cache stats     the transcript cache's hits, misses and size
stt cache clear     forget what earlier runs transcribed
stt user add EMAIL --tenant T --stack S   a tenant's user on a deployed stack
stt login --stack S                       sign in to a deployed stack (then --api needs no token)
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import jiwer
from tqdm import tqdm

from localcloud.client import FINAL_STATUSES, JobResult, JobTimeout, PipelineClient
from localcloud.login import SignInFailed
from localcloud.services import ServiceUnavailable
from localcloud.users import UserNotAdded
from sttpipe.domain.keys import TRANSCRIPT_FORMATS

if TYPE_CHECKING:
    from sttpipe.cache import TieredTranscriptCache

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "sample.flac"
SAMPLE_TEXT = REPO / "samples" / "sample.txt"
STATE_FILE = REPO / ".localcloud" / "up.json"

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2, 64
EXIT_INTERRUPTED = 130  # as a shell reports SIGINT
# Every local cloud `stt` starts keeps its cache here in the local Redis (24 h, the L2 TTL):
# a recording transcribed by one run is not paid for again by the next.
LOCAL_CACHE_NAMESPACE = "stt-local"


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ProgressPrinter:
    """Prints each change of the job's status, and each chunk as it finishes."""

    def __init__(self) -> None:
        self._status: str | None = None
        self._chunks: dict[int, str] = {}

    def __call__(self, job: dict[str, Any]) -> None:
        progress = job["progress"]
        if job["status"] != self._status:
            self._status = job["status"]
            total = f", {progress['chunks_total']} chunks" if progress["chunks_total"] else ""
            _err(f"  job {job['job_id']}: {job['status']}{total}")
        for chunk in sorted(job["chunks"], key=lambda c: c["index"]):
            if chunk["state"] != "PENDING" and self._chunks.get(chunk["index"]) != chunk["state"]:
                self._chunks[chunk["index"]] = chunk["state"]
                _err(
                    f"  chunk {chunk['index']:>3} {_clock(chunk['start_ms'])}-"
                    f"{_clock(chunk['end_ms'])} {chunk['state']:<8}"
                    f" ({progress['chunks_finished']}/{progress['chunks_total']})"
                )


class ProgressBar:
    """On a terminal: a bar of the job's chunks, its status as the bar's label (tqdm)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stderr
        self._bar: tqdm[Any] | None = None

    def __call__(self, job: dict[str, Any]) -> None:
        progress = job["progress"]
        if self._bar is None:
            if not progress["chunks_total"]:
                return  # not split yet: no total to show
            self._bar = tqdm(
                total=progress["chunks_total"], unit="chunk", file=self._out, leave=True
            )
        self._bar.set_description_str(f"{job['job_id'][:8]} {job['status']}")
        self._bar.update(progress["chunks_finished"] - self._bar.n)
        if job["status"] in FINAL_STATUSES:
            self._bar.close()


def progress_for(out: TextIO) -> Callable[[dict[str, Any]], None]:
    """A bar on a terminal; a line per change where output is kept (logs, CI)."""
    return ProgressBar(out) if out.isatty() else ProgressPrinter()


def upload_progress(path: Path, out: TextIO) -> Callable[[int], None] | None:
    """A bar of the bytes sent, on a terminal."""
    if not out.isatty():
        return None
    bar = tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name, file=out, leave=False
    )

    def sent(n: int) -> None:
        bar.update(n)
        if bar.n >= (bar.total or 0):
            bar.close()

    return sent


def _clock(ms: int) -> str:
    seconds = ms // 1000
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def _running_api() -> tuple[str, str] | None:
    """URL and token of a local cloud that `stt up` keeps running, if there is one."""
    if not STATE_FILE.exists():
        return None
    state = json.loads(STATE_FILE.read_text())
    try:
        httpx.get(f"{state['api_url']}/openapi.json", timeout=2)
    except httpx.HTTPError:
        return None
    return str(state["api_url"]), str(state["token"])


def _token_for(args: argparse.Namespace) -> str | None:
    """--token (or $STT_TOKEN), else the ID token `stt login` keeps for --api."""
    if args.token:
        return str(args.token)
    import boto3

    from localcloud.login import CredentialStore, id_token

    return id_token(CredentialStore(), args.api, lambda region: boto3.client("cognito-idp", region))


@contextmanager
def _pipeline_api(
    args: argparse.Namespace, *, shared_cache: bool = True
) -> Iterator[tuple[str, str | None]]:
    """An API URL and token: the one named, the one `stt up` runs, or a new local cloud (on
    the cache `stt` keeps between runs, or on an empty one of its own)."""
    running = (args.api, _token_for(args)) if args.api else _running_api()
    if running:
        _err(f"using the local cloud at {running[0]}")
        yield running
        return
    from localcloud.pipeline import LocalPipeline  # heavy: only when we start the cloud

    _err(f"starting a local cloud on {args.emulator} (speech engine: {args.engine}) ...")
    with LocalPipeline(
        emulator=args.emulator,
        engine=args.engine,
        cache_namespace=LOCAL_CACHE_NAMESPACE if shared_cache else None,
    ) as pipeline:
        _err(f"  logs: {pipeline.cloud.log_dir}")
        yield pipeline.api_url, pipeline.token()


def _demo_job(args: argparse.Namespace) -> JobResult:
    """The bundled sample through the whole pipeline, on an empty cache of its own (a cache
    kept from an earlier run would answer at once)."""
    with _pipeline_api(args, shared_cache=False) as (api_url, token):
        client = PipelineClient(api_url, token=token)
        try:
            _err(f"uploading {SAMPLE} ({SAMPLE.stat().st_size} bytes) with a pre-signed POST")
            job_id = client.submit(SAMPLE, language="en").job_id
            return client.follow(
                job_id,
                args.out,
                timeout_s=args.timeout,
                on_progress=progress_for(sys.stderr),
                name=SAMPLE.stem,
            )
        finally:
            client.close()


def summary_table(paths: list[Path], results: list[JobResult]) -> str:
    """One line per file: how its job ended and what it cost."""
    header = ("FILE", "STATUS", "AUDIO", "CHUNKS", "API CALLS", "CACHED", "OUTPUT")
    rows = [header]
    for path, result in zip(paths, results, strict=True):
        stats = result.job.get("stats") or {}
        hits = sum((stats.get("cache_hits") or {}).values())
        rows.append(
            (
                path.name,
                result.status,
                f"{stats['duration_s']:.0f} s" if "duration_s" in stats else "-",
                str(stats.get("chunks", "-")),
                str(stats.get("speech_api_calls", "-")),
                "whole file" if stats.get("upload_cache_hit") else str(hits),
                str(next(iter(result.files.values())).with_suffix(".*")) if result.files else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _report(result: JobResult) -> int:
    job = result.job
    if result.status == "FAILED":
        _err(f"job {result.job_id} FAILED: {job.get('failure_reason')}")
        return EXIT_FAILED
    print(result.text, end="" if result.text.endswith("\n") else "\n", flush=True)
    stats = job.get("stats", {})
    _err(
        f"job {result.job_id} {result.status}: {stats.get('chunks')} chunks "
        f"({stats.get('chunks_silent')} silent), {stats.get('speech_api_calls')} speech API calls, "
        f"cache hits {stats.get('cache_hits')}"
    )
    for fmt, file in result.files.items():
        _err(f"  {fmt.upper():<4} {file}")
    if result.status == "PARTIAL":
        _err(f"some chunks failed: {job.get('failure_reason')}")
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_transcribe(args: argparse.Namespace) -> int:
    missing = [path for path in args.files if not path.is_file()]
    if missing:
        _err(f"stt: no such file: {', '.join(map(str, missing))}")
        return EXIT_USAGE
    if args.language not in (None, "en") and not args.api:
        # The local engines (Whisper tiny.en, PocketSphinx) would write English words for it.
        _err(
            f"stt: the local speech engine ({args.engine}) knows English only; --language "
            f"{args.language} needs a deployed stack's API (--api URL --token T)"
        )
        return EXIT_USAGE
    formats = None if args.output_format == "all" else {args.output_format}
    with _pipeline_api(args) as (api_url, token):
        client = PipelineClient(api_url, token=token)
        jobs: list[tuple[Path, str]] = []
        try:
            # Every file is submitted before the first is waited for: their jobs run together.
            jobs.extend((path, _submit(client, args, path)) for path in args.files)
            results = [
                client.follow(
                    job_id,
                    args.out,
                    timeout_s=args.timeout,
                    on_progress=progress_for(sys.stderr),
                    name=name,
                    formats=formats,
                )
                for (path, job_id), name in zip(jobs, output_names(args.files), strict=True)
            ]
            codes = [_report(result) for result in results]
            if len(results) > 1:
                _err(summary_table([path for path, _ in jobs], results))
        except KeyboardInterrupt:
            _cancel_unfinished(client, [job_id for _, job_id in jobs])
            raise
        finally:
            client.close()
    # The worst outcome: a failed job, then a partial one.
    return next((c for c in (EXIT_FAILED, EXIT_PARTIAL) if c in codes), EXIT_OK)


def _cancel_unfinished(client: PipelineClient, job_ids: list[str]) -> None:
    """Ctrl-C: the jobs this command started and that have not ended stop costing calls."""
    for job_id in job_ids:
        try:
            if client.cancel(job_id):
                _err(f"cancelled job {job_id}; its finished chunks are kept: stt rerun {job_id}")
        except httpx.HTTPError as exc:
            _err(f"could not cancel job {job_id} ({exc}); it goes on")


def _submit(client: PipelineClient, args: argparse.Namespace, path: Path) -> str:
    _err(f"uploading {path} ({path.stat().st_size} bytes) with a pre-signed POST")
    return client.submit(
        path,
        language=args.language,
        priority=args.priority,
        prompt=args.prompt,
        mixed_languages=args.mixed_languages,
        on_upload=upload_progress(path, sys.stderr),
    ).job_id


def output_names(paths: list[Path]) -> list[str]:
    """Each input's output name: its stem, numbered where two inputs share one."""
    names: list[str] = []
    for path in paths:
        name, n = path.stem, 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}"
        names.append(name)
    return names


def cmd_rerun(args: argparse.Namespace) -> int:
    # Never a new local cloud: the job lives in the one that ran it.
    running = (args.api, _token_for(args)) if args.api else _running_api()
    if running is None:
        _err("stt rerun: no local cloud is up (`stt up`); name --api")
        return EXIT_USAGE
    client = PipelineClient(running[0], token=running[1])
    try:
        job = client.rerun(args.job_id)
        _err(f"re-running job {args.job_id} (run {job['runs']})")
        result = client.follow(
            args.job_id,
            args.out,
            timeout_s=args.timeout,
            on_progress=progress_for(sys.stderr),
            name=Path(job["filename"]).stem,  # the last part of the name only
        )
    finally:
        client.close()
    return _report(result)


def cmd_demo(args: argparse.Namespace) -> int:
    result = _demo_job(args)
    code = _report(result)
    if result.status != "FAILED":
        error = word_error_rate(SAMPLE_TEXT.read_text(), result.text)
        _err(f"word error rate against {SAMPLE_TEXT.relative_to(REPO)}: {error:.1%}")
    return code


def word_error_rate(reference: str, hypothesis: str) -> float:
    normalise = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )
    # Line breaks are word boundaries too (jiwer splits on spaces only).
    return float(
        jiwer.wer(
            " ".join(reference.split()),
            " ".join(hypothesis.split()),
            reference_transform=normalise,
            hypothesis_transform=normalise,
        )
    )


def cmd_up(args: argparse.Namespace) -> int:
    from localcloud.pipeline import LocalPipeline

    if not _port_free(args.port):  # before minutes of starting a cloud that cannot serve
        _err(f"stt: port {args.port} is already in use; stop what holds it or pick another --port")
        return EXIT_FAILED
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalPipeline(
        emulator=args.emulator,
        engine=args.engine,
        cache_namespace=LOCAL_CACHE_NAMESPACE,
        api_port=args.port,
        echo_logs=args.verbose,
        prewarm=True,  # it serves many jobs: none should pay a cold start
    ) as pipeline:
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(json.dumps(pipeline.describe(), indent=2))
        for name, value in pipeline.describe().items():
            _err(f"{name:>16}: {value}")
        _err(
            "local cloud running; open web_page in a browser, or `stt transcribe FILE` uses it."
            " Ctrl-C stops it."
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            STATE_FILE.unlink(missing_ok=True)
    return EXIT_OK


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_user_add(args: argparse.Namespace) -> int:
    """Add a tenant's user to a deployed stack's user pool."""
    import boto3

    from localcloud.users import add_user, user_pool_of

    session = boto3.Session(region_name=args.region)
    pool = args.user_pool_id or user_pool_of(session.client("cloudformation"), args.stack)
    groups = [
        g for g, wanted in (("operators", args.operator), ("priority", args.priority)) if wanted
    ]
    add_user(session.client("cognito-idp"), pool, args.email, args.tenant, groups)
    _err(f"added {args.email} to tenant {args.tenant}; Cognito emails a temporary password")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    """Sign in to a deployed stack; its --api then needs no --token."""
    import getpass

    import boto3

    from localcloud.login import CredentialStore, sign_in, stack_sign_in

    session = boto3.Session(region_name=args.region)
    stack = stack_sign_in(session.client("cloudformation"), args.stack, session.region_name)
    username = args.username or input("user (e-mail): ")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password of {username}: ")

    def new_password() -> str:
        _err("this is the first sign-in: choose a new password")
        if args.password_stdin:
            return sys.stdin.readline().rstrip("\n")
        return getpass.getpass("new password: ")

    credentials = sign_in(session.client("cognito-idp"), stack, username, password, new_password)
    store = CredentialStore()
    store.save(credentials)
    tenant = credentials.claims.get("custom:tenant_id", "?")
    _err(f"signed in to {stack.api_url} as {username} (tenant {tenant}); kept in {store.path}")
    return EXIT_OK


def cmd_cache_stats(args: argparse.Namespace) -> int:
    """The transcript cache's statistics, of `stt up`'s local cloud or of the servers named."""
    state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    if not (args.database_url or state.get("database")):
        _err("stt cache stats: no local cloud is up (`stt up`); name --database-url")
        return EXIT_USAGE
    with _cache(args, state) as cache:
        print(cache.stats().model_dump_json(indent=2))
    return EXIT_OK


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Empty the cache `stt transcribe` and `stt up` keep between runs (or the one named)."""
    from localcloud.services import redis_url

    state = json.loads(STATE_FILE.read_text()) if STATE_FILE.exists() else {}
    args.redis_url = args.redis_url or state.get("redis") or redis_url()
    args.namespace = args.namespace or LOCAL_CACHE_NAMESPACE
    with _cache(args, state) as cache:
        deleted = cache.tiered.clear()
    _err(f"cache {args.namespace} cleared: {deleted} entries deleted")
    return EXIT_OK


@contextmanager
def _cache(args: argparse.Namespace, state: dict[str, Any]) -> Iterator[TieredTranscriptCache]:
    """The transcript cache on the servers named, else on those of `stt up`'s local cloud."""
    from pydantic import SecretStr

    from sttpipe.cache import CacheUnavailable, build_transcript_cache, redis_for
    from sttpipe.config import Settings

    database = args.database_url or state.get("database")
    redis = args.redis_url or state.get("redis")
    settings = Settings(
        database_url=SecretStr(database) if database else None,
        database_secret_id=None,
        redis_url=SecretStr(redis) if redis else None,
        cache_namespace=args.namespace or state.get("cache_namespace") or "stt",
        cache_enabled=True,
    )
    cache = build_transcript_cache(settings, redis_for(settings))
    assert cache is not None  # enabled above
    try:
        yield cache
    except CacheUnavailable as exc:
        raise ServiceUnavailable(f"the transcript cache is not reachable ({exc})") from exc
    finally:
        cache.tiered.close()


def _version() -> str:
    try:
        return importlib.metadata.version("sttpipe")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout without installing
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stt", description="Run recordings through the sttpipe pipeline on a local cloud."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the cloud does")
    parser.add_argument("--version", action="version", version=f"stt {_version()}")
    # -v after the command too (`stt transcribe talk.mp3 -v`); SUPPRESS keeps a -v given before
    # it from being reset by the command's default.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def cloud_options(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--emulator",
            default="moto",
            help="moto (default, in process), localstack (started on this host), or the URL "
            "of a running LocalStack such as http://localhost:4566",
        )
        command.add_argument(
            "--engine",
            default="faster-whisper",
            choices=["faster-whisper", "pocketsphinx"],
            help="offline engine behind the local speech API (default: faster-whisper)",
        )

    def api_options(command: argparse.ArgumentParser, default_api: str) -> None:
        command.add_argument(
            "--api", help=f"base URL of a running pipeline API (default: {default_api})"
        )
        command.add_argument(
            "--token",
            default=os.environ.get("STT_TOKEN"),
            help="bearer token for --api (default: $STT_TOKEN, else the one `stt login` keeps)",
        )
        command.add_argument(
            "--out",
            "--output-dir",
            dest="out",
            type=Path,
            default=Path("out"),
            help="where the transcripts go (default: out)",
        )
        command.add_argument(
            "--timeout", type=float, default=900, help="seconds to wait for the job (default 900)"
        )

    def job_options(command: argparse.ArgumentParser) -> None:
        cloud_options(command)
        api_options(command, "`stt up`'s, else a new one")

    transcribe = commands.add_parser(
        "transcribe",
        parents=[verbose],
        help="transcribe local files",
        description="Upload each FILE through a pre-signed POST (all of them first: their jobs "
        "run together), follow the jobs, write <name>.txt/.json/.srt/.vtt/.tsv to --out and print "
        "the texts. Exit status: 0 completed, 1 a job failed (the reason on stderr), 2 some "
        "chunks failed.",
    )
    transcribe.add_argument("files", type=Path, nargs="+", metavar="FILE")
    transcribe.add_argument(
        "--output-format",
        choices=[*TRANSCRIPT_FORMATS, "all"],
        default="all",
        help="the transcript format(s) to write into --out, as <file name>.<format> (default: all)",
    )
    languages = transcribe.add_mutually_exclusive_group()
    languages.add_argument(
        "--language",
        help="ISO-639-1 code, e.g. en or ru (default: detected once from the first speech and "
        "used for every chunk)",
    )
    languages.add_argument(
        "--mixed-languages",
        action="store_true",
        help="the recording switches languages: let each chunk detect its own",
    )
    transcribe.add_argument(
        "--prompt",
        help="initial prompt or vocabulary (names, terms) sent to the speech API with every "
        "chunk; part of the cache key",
    )
    transcribe.add_argument(
        "--priority", choices=["high", "normal", "low"], help="queue for the job (default: normal)"
    )
    job_options(transcribe)
    transcribe.set_defaults(func=cmd_transcribe)

    demo = commands.add_parser(
        "demo",
        parents=[verbose],
        help="transcribe the bundled sample and print its word error rate",
    )
    job_options(demo)
    demo.set_defaults(func=cmd_demo)

    rerun = commands.add_parser(
        "rerun",
        parents=[verbose],
        help="transcribe the failed chunks of a job again",
        description="Re-run the failed chunks of a PARTIAL or FAILED job on the local cloud that "
        "ran it, follow it and write its transcripts as `transcribe` does (same exit status).",
    )
    rerun.add_argument("job_id")
    api_options(rerun, "`stt up`'s")
    rerun.set_defaults(func=cmd_rerun)

    up = commands.add_parser(
        "up", parents=[verbose], help="keep a local cloud running until Ctrl-C"
    )
    cloud_options(up)
    up.add_argument("--port", type=int, default=3000, help="port of the HTTP API (default 3000)")
    up.set_defaults(func=cmd_up)

    cache = commands.add_parser("cache", parents=[verbose], help="the transcript cache")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    stats = cache_commands.add_parser(
        "stats",
        parents=[verbose],
        help="hits and misses by level, bytes stored, entries warmed (JSON)",
        description="Statistics of the transcript cache: of the local cloud `stt up` runs, or "
        "of the PostgreSQL/Redis named here.",
    )

    def cache_servers(command: argparse.ArgumentParser, namespace_help: str) -> None:
        command.add_argument("--database-url", help="libpq URL of the job database (L3)")
        command.add_argument("--redis-url", help="redis:// or rediss:// URL (L2)")
        command.add_argument("--namespace", help=namespace_help)

    cache_servers(stats, "the cache namespace (STT_CACHE_NAMESPACE)")
    stats.set_defaults(func=cmd_cache_stats)
    clear = cache_commands.add_parser(
        "clear",
        parents=[verbose],
        help="delete every entry of the cache kept between runs",
        description="Empty the transcript cache `stt transcribe` and `stt up` keep between runs "
        f"(namespace {LOCAL_CACHE_NAMESPACE} on the local Redis, and on `stt up`'s database "
        "while it is up), or the one named here: the next run of a recording calls the speech "
        "API again.",
    )
    cache_servers(clear, f"the cache namespace (default {LOCAL_CACHE_NAMESPACE})")
    clear.set_defaults(func=cmd_cache_clear)

    login = commands.add_parser(
        "login",
        parents=[verbose],
        help="sign in to a deployed stack",
        description="Sign in with the stack's Cognito user pool (the password goes to Cognito "
        "only; a first sign-in replaces the temporary password `stt user add` had emailed). "
        "The tokens are kept, private to you, in ~/.config/stt/credentials.json "
        "($STT_CREDENTIALS_FILE); `stt transcribe --api <the stack's ApiUrl>` then uses them, "
        "refreshed when they expire.",
    )
    login.add_argument("--stack", required=True, help="the stack's name")
    login.add_argument("--region", help="AWS region (default: the environment's)")
    login.add_argument("--username", help="the user's e-mail (asked when not given)")
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (and a first sign-in's new one) from stdin, a line each",
    )
    login.set_defaults(func=cmd_login)

    user = commands.add_parser("user", parents=[verbose], help="a deployed stack's users")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser(
        "add",
        parents=[verbose],
        help="add a tenant's user (an operator's task; AWS credentials from the environment)",
        description="Create a user in the stack's Cognito user pool with its custom:tenant_id; "
        "Cognito emails the user a temporary password.",
    )
    add.add_argument("email")
    add.add_argument("--tenant", required=True, help="the tenant the user works in")
    pool = add.add_mutually_exclusive_group(required=True)
    pool.add_argument("--stack", help="the stack's name (its UserPoolId output)")
    pool.add_argument("--user-pool-id")
    add.add_argument("--region", help="AWS region (default: the environment's)")
    add.add_argument("--operator", action="store_true", help="may see fleet-wide statistics")
    add.add_argument("--priority", action="store_true", help='may ask for priority "high"')
    add.set_defaults(func=cmd_user_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        _err("stt: interrupted")
        return EXIT_INTERRUPTED
    except (httpx.HTTPError, ServiceUnavailable, JobTimeout, UserNotAdded, SignInFailed) as exc:
        # What the machine or the API said: a line, not a traceback (-v logs the details).
        _err(f"stt: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        _err(f"stt: {exc.strerror}: a port the local cloud needs is taken ({exc})")
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())
