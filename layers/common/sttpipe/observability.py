"""The names of every CloudWatch metric the pipeline emits (namespace `STT`, EMF via Powertools).

Code emits metrics only through these names, and template.yaml's dashboard and alarms use the
same ones; a test holds the two together. Every metric also carries Powertools' `service`
dimension (the function's POWERTOOLS_SERVICE_NAME).
"""

from __future__ import annotations

from enum import StrEnum

NAMESPACE = "STT"


class Metric(StrEnum):
    # splitter
    JOBS_ACCEPTED = "JobsAccepted"
    JOBS_REJECTED = "JobsRejected"
    CHUNKS_QUEUED = "ChunksQueued"
    SILENT_CHUNKS_SKIPPED = "SilentChunksSkipped"
    SPLIT_DURATION = "SplitDuration"  # milliseconds
    # worker
    CHUNKS_TRANSCRIBED = "ChunksTranscribed"
    CHUNKS_FAILED = "ChunksFailed"
    CHUNK_DURATION = "ChunkDuration"  # milliseconds, whole chunk incl. cache and retries
    QUEUE_WAIT = "QueueWait"  # milliseconds a chunk message waited in its queue
    SPEECH_API_CALLS = "SpeechApiCalls"
    SPEECH_API_LATENCY = "SpeechApiLatency"  # milliseconds per chunk, retries included
    SPEECH_API_RETRIES = "SpeechApiRetries"
    SPEECH_API_THROTTLED = "SpeechApiThrottled"  # 429 answers
    CACHE_HITS = "CacheHits"  # dimension Level = L1 | L2 | L3
    CACHE_MISSES = "CacheMisses"
    CACHE_LEVEL_UNAVAILABLE = "CacheLevelUnavailable"  # dimension Level
    # merge
    JOBS_COMPLETED = "JobsCompleted"
    JOBS_PARTIAL = "JobsPartial"
    JOBS_FAILED = "JobsFailed"
    JOB_DURATION = "JobDuration"  # milliseconds from upload to transcript


class Dimension(StrEnum):
    LEVEL = "Level"  # cache level
    PRIORITY = "Priority"  # high | normal | low
