"""python -m localcloud.speech_server: run the local Cloud.ru stand-in in the foreground."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn
from pydantic import ValidationError

from localcloud.speech_server.app import (
    DEFAULT_API_KEY,
    DEFAULT_MODEL,
    MAX_UPLOAD_BYTES,
    SpeechService,
    Switches,
    create_app,
)
from localcloud.speech_server.engines import ENGINES, load_engine
from localcloud.speech_server.runner import default_workers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="python -m localcloud.speech_server",
        description="A local stand-in for the Cloud.ru speech API (POST /v1/audio/transcriptions) "
        "with a real offline engine, fault/latency switches (also at run time: POST /control "
        "with a JSON object of Switches fields) and counters (GET /stats, POST /stats/reset).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port to listen on")
    p.add_argument(
        "--engine",
        choices=ENGINES,
        default=env("SPEECH_SERVER_ENGINE", "faster-whisper"),
        help="speech engine (env SPEECH_SERVER_ENGINE)",
    )
    p.add_argument(
        "--api-key",
        default=env("SPEECH_SERVER_API_KEY", DEFAULT_API_KEY),
        help="the Bearer key clients must send (env SPEECH_SERVER_API_KEY)",
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help="the only model name accepted")
    p.add_argument("--max-bytes", type=int, default=MAX_UPLOAD_BYTES, help="413 above this")
    p.add_argument(
        "--workers", type=int, default=default_workers(), help="transcriptions run at once"
    )
    p.add_argument("--allow-verbose-json", action="store_true", help="accept verbose_json")
    faults = p.add_argument_group("faults and latency (all changeable via POST /control)")
    faults.add_argument("--latency", type=float, default=0.0, help="seconds added to each answer")
    faults.add_argument(
        "--latency-per-audio-second", type=float, default=0.0, help="seconds added per audio s"
    )
    faults.add_argument("--rate-429", type=float, default=0.0, help="share answered 429")
    faults.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429")
    faults.add_argument("--rate-5xx", type=float, default=0.0, help="share answered 5xx")
    faults.add_argument("--status-5xx", type=int, default=503, help="status of those")
    faults.add_argument("--rate-hang", type=float, default=0.0, help="share held open")
    faults.add_argument("--hang-seconds", type=float, default=30.0, help="how long (then 504)")
    faults.add_argument("--seed", type=int, default=None, help="seed of the fault draws")
    p.add_argument("--log-level", default="info", help="uvicorn's log level")
    args = p.parse_args(argv)
    try:
        args.switches = Switches(
            latency_s=args.latency,
            latency_per_audio_s=args.latency_per_audio_second,
            rate_429=args.rate_429,
            retry_after_s=args.retry_after,
            rate_5xx=args.rate_5xx,
            status_5xx=args.status_5xx,
            rate_hang=args.rate_hang,
            hang_s=args.hang_seconds,
            seed=args.seed,
            verbose_json=args.allow_verbose_json,
        )
    except ValidationError as exc:
        p.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    service = SpeechService(
        load_engine(args.engine, workers=args.workers),
        api_key=args.api_key,
        model=args.model,
        max_bytes=args.max_bytes,
        workers=args.workers,
        switches=args.switches,
    )
    uvicorn.run(
        create_app(service),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
