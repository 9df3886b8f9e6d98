"""A stand-in for the Cloud.ru transcription endpoint, with fault and latency switches.

It answers like Cloud.ru did in practice (a vLLM server behind a gateway): Bearer key, model name
with the `openai/` prefix, `json`/`text` only, 25 MB limit, vLLM-style error bodies.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from localcloud.speech_server.engines import (
    SAMPLE_RATE,
    Engine,
    EngineResult,
    UndecodableAudioError,
    decode_audio,
)

DEFAULT_MODEL = "openai/whisper-large-v3"
DEFAULT_API_KEY = "local-speech-key"
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
Fault = Literal["429", "5xx", "hang"]


class Switches(BaseModel):
    """Faults and latency, settable at start and at run time through `POST /control`."""

    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(
        default=0.0,
        ge=0,
        description="a call is answered latency_s + latency_per_audio_s x its audio seconds after "
        "it arrived, or when decoding ends if that is later",
    )
    latency_per_audio_s: float = Field(default=0.0, ge=0, description="see latency_s")
    rate_429: float = Field(default=0.0, ge=0, le=1)
    retry_after_s: float | None = Field(default=1.0, ge=0, description="None: no header")
    rate_5xx: float = Field(default=0.0, ge=0, le=1)
    status_5xx: int = Field(default=503, ge=500, le=599)
    rate_hang: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0, description="how long a hung request is held")
    seed: int | None = Field(default=None, description="makes the random faults repeatable")
    script: list[Fault] = Field(
        default_factory=list, description="faults for the next requests, in order, before rates"
    )
    verbose_json: bool = Field(default=False, description="accept response_format=verbose_json")
    fail_files: dict[str, Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=dict,
        description="uploaded file name -> the error status every request for it gets",
    )

    @model_validator(mode="after")
    def _rates_fit(self) -> Switches:
        if self.rate_429 + self.rate_5xx + self.rate_hang > 1:
            raise ValueError("rate_429 + rate_5xx + rate_hang must not exceed 1")
        return self


@dataclass
class Stats:
    requests_total: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    audio_seconds: float = 0.0
    # Per answered call: (seconds from this Stats' creation to its arrival, to its answer,
    # audio seconds it carried), so benchmarks can see when the calls ran.
    calls: list[tuple[float, float, float]] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)
    connections: set[tuple[str, int]] = field(default_factory=set)
    # Answered calls by the language they named ("" for none).
    languages: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, object]:
        return {
            "requests_total": self.requests_total,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "audio_seconds": round(self.audio_seconds, 3),
            "calls": [[round(v, 3) for v in call] for call in self.calls],
            "connections": len(self.connections),  # distinct client TCP connections seen
            "languages": dict(sorted(self.languages.items())),
        }


def error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    # vLLM's error body.
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return JSONResponse(body, status_code=status)


class SpeechService:
    """The server's state (engine, switches, counters) and its request handlers."""

    def __init__(
        self,
        engine: Engine,
        *,
        api_key: str = DEFAULT_API_KEY,
        model: str = DEFAULT_MODEL,
        max_bytes: int = MAX_UPLOAD_BYTES,
        workers: int = 2,
        switches: Switches | None = None,
    ) -> None:
        self.engine = engine
        self.api_key = api_key
        self.model = model
        self.max_bytes = max_bytes
        # Requests are all accepted (so in-flight counts mean something); decoding is limited.
        self._decoding = anyio.CapacityLimiter(workers)
        self.stats = Stats()
        self.switches = Switches()
        self._rng = random.Random()
        self.set_switches(switches or Switches())

    def set_switches(self, switches: Switches) -> None:
        self.switches = switches
        if switches.seed is not None:
            self._rng.seed(switches.seed)

    def _draw_fault(self) -> Fault | None:
        s = self.switches
        if s.script:
            return s.script.pop(0)
        rates: tuple[tuple[Fault, float], ...] = (
            ("hang", s.rate_hang),
            ("429", s.rate_429),
            ("5xx", s.rate_5xx),
        )
        r = self._rng.random()  # one draw per request, so each rate holds exactly
        for fault, rate in rates:
            if r < rate:
                return fault
            r -= rate
        return None

    async def transcriptions(self, request: Request) -> Response:
        # Always through self.stats: a reset may swap it while this request runs.
        self.stats.requests_total += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        if request.client:
            self.stats.connections.add((request.client.host, request.client.port))
        try:
            response = await self._transcribe(request)
        finally:
            self.stats.in_flight -= 1
        self.stats.by_status[response.status_code] += 1
        return response

    async def _transcribe(self, request: Request) -> Response:
        arrived = time.monotonic()
        if int(request.headers.get("content-length") or 0) > self.max_bytes:
            async for _ in request.stream():  # read it all, so the client sees the 413
                pass
            return error(413, "Request Entity Too Large", "RequestEntityTooLarge")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(key, self.api_key):
            return error(401, "Invalid API key", "AuthenticationError")

        fault = self._draw_fault()
        if fault == "hang":
            await anyio.sleep(self.switches.hang_s)
            return error(504, "Gateway Timeout", "GatewayTimeout")
        if fault == "429":
            after = self.switches.retry_after_s
            response = error(429, "Too Many Requests", "RateLimitError")
            if after is not None:
                response.headers["Retry-After"] = f"{after:g}"
            return response
        if fault == "5xx":
            return error(self.switches.status_5xx, "Internal Server Error", "InternalServerError")

        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            return error(400, "Field 'file' is required")
        if status := self.switches.fail_files.get(upload.filename or ""):
            return error(status, f"Injected failure for {upload.filename}", "InjectedError")
        if (model := form.get("model")) != self.model:
            return error(404, f"The model `{model}` does not exist.", "NotFoundError")
        response_format = str(form.get("response_format") or "json")
        allowed = (
            ("json", "text", "verbose_json") if self.switches.verbose_json else ("json", "text")
        )
        if response_format not in allowed:
            return error(400, "Currently only support response_format `text` or `json`")
        try:
            temperature = float(str(form.get("temperature") or 0))
        except ValueError:
            return error(400, "temperature must be a number")
        language = str(form.get("language") or "") or None
        prompt = str(form.get("prompt") or "") or None
        data = await upload.read()
        if len(data) > self.max_bytes:
            return error(413, "Request Entity Too Large", "RequestEntityTooLarge")

        def work() -> tuple[float, EngineResult]:
            pcm = decode_audio(data)
            result = self.engine.transcribe(
                pcm, language=language, prompt=prompt, temperature=temperature
            )
            return len(pcm) / SAMPLE_RATE, result

        try:
            duration, result = await anyio.to_thread.run_sync(work, limiter=self._decoding)
        except UndecodableAudioError as exc:
            return error(400, str(exc))
        self.stats.audio_seconds += duration
        # The latency model counts from the request's arrival, so the server's own reading and
        # decoding are inside it, as a real API's are inside its latency.
        s = self.switches
        model_s = s.latency_s + s.latency_per_audio_s * duration
        await anyio.sleep(max(0.0, model_s - (time.monotonic() - arrived)))
        stats = self.stats
        stats.calls.append((arrived - stats.since, time.monotonic() - stats.since, duration))
        stats.languages[language or ""] += 1

        if response_format == "text":
            return PlainTextResponse(result.text)
        body: dict[str, object] = {"text": result.text}
        if response_format == "verbose_json":
            body |= {
                "task": "transcribe",
                "language": result.language,
                "duration": duration,
                "segments": [
                    {"id": i, "start": seg.start_s, "end": seg.end_s, "text": seg.text}
                    for i, seg in enumerate(result.segments)
                ],
            }
        return JSONResponse(body)

    def reset_stats_now(self) -> dict[str, object]:
        # In-flight requests are still running: keep counting them.
        self.stats = Stats(in_flight=self.stats.in_flight, max_in_flight=self.stats.in_flight)
        return self.stats.as_json()

    def update_switches(self, changes: dict[str, object]) -> Switches:
        """Apply a partial change; raises ValidationError and keeps the old ones if it is bad."""
        self.set_switches(Switches.model_validate(self.switches.model_dump() | changes))
        return self.switches

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.as_json())

    async def reset_stats(self, request: Request) -> Response:
        return JSONResponse(self.reset_stats_now())

    async def control(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise TypeError("expected a JSON object")
                self.update_switches(changes)
            except (ValueError, TypeError) as exc:  # ValidationError is a ValueError
                return error(400, f"bad control request: {exc}")
        return JSONResponse(self.switches.model_dump())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "engine": self.engine.name, "model": self.model})


def create_app(service: SpeechService) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/audio/transcriptions", service.transcriptions, methods=["POST"]),
            Route("/control", service.control, methods=["GET", "POST"]),
            Route("/stats", service.get_stats, methods=["GET"]),
            Route("/stats/reset", service.reset_stats, methods=["POST"]),
            Route("/health", service.health, methods=["GET"]),
        ]
    )
