"""Assembling a job's chunk transcripts and rendering the result (TXT, JSON, SRT, WebVTT,
TSV)."""

from sttpipe.transcript.assemble import assemble
from sttpipe.transcript.render import render_json, render_srt, render_tsv, render_txt, render_vtt
from sttpipe.transcript.text import DEFAULT_HALLUCINATIONS, split_cues

__all__ = [
    "DEFAULT_HALLUCINATIONS",
    "assemble",
    "render_json",
    "render_srt",
    "render_tsv",
    "render_txt",
    "render_vtt",
    "split_cues",
]
