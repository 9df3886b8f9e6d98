"""A job's transcript: timed segments in recording order, and the chunks that could not be heard."""

from __future__ import annotations

from pydantic import BaseModel, Field

from sttpipe.domain.models import Segment


class FailedChunk(BaseModel):
    """A stretch of the recording with no transcript, and why."""

    index: int
    start_ms: int
    end_ms: int
    reason: str


class Transcript(BaseModel):
    language: str | None = None
    segments: list[Segment] = Field(default_factory=list)  # ordered, non-overlapping
    failed: list[FailedChunk] = Field(default_factory=list)  # ordered by index

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)
