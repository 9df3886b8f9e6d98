"""The catalogue of every CloudWatch metric the pipeline emits (namespace `STT`, EMF through
Powertools): names, dimensions and dimension values. Code records through the `MetricRecorder`
port (sttpipe.ports; Powertools in sttpipe.adapters.metrics).

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
    SPEECH_API_KEY_REFUSED = "SpeechApiKeyRefused"  # 401/403 answers: the fleet pauses
    CACHE_HITS = "CacheHits"  # dimension Level = L1 | L2 | L3
    CACHE_MISSES = "CacheMisses"
    CACHE_LEVEL_UNAVAILABLE = "CacheLevelUnavailable"  # dimension Level
    CACHE_CORRUPT_ENTRIES = "CacheCorruptEntries"  # dimension Level; ignored, deleted, rewritten
    # cache warmer
    CACHE_ENTRIES_WARMED = "CacheEntriesWarmed"  # L3 entries promoted into L2
    # merge
    JOBS_COMPLETED = "JobsCompleted"
    JOBS_PARTIAL = "JobsPartial"
    JOBS_FAILED = "JobsFailed"
    JOB_DURATION = "JobDuration"  # milliseconds from upload to transcript; dimension SizeClass
    # reconciler
    JOBS_REPAIRED = "JobsRepaired"  # stuck jobs resumed or ended; dimension Repair
    # domain events (any function)
    EVENTS_NOT_PUBLISHED = "EventsNotPublished"  # EventBridge refused or could not be reached


class Dimension(StrEnum):
    LEVEL = "Level"  # cache level
    PRIORITY = "Priority"  # high | normal | low
    SIZE_CLASS = "SizeClass"  # the recording's length: see size_class()
    REPAIR = "Repair"  # what the reconciler did to a stuck job: resumed | ended
    SERVICE = "service"  # added by Powertools to every metric: POWERTOOLS_SERVICE_NAME


# ---- dimension values --------------------------------------------------------------------------

# Upper bounds (seconds of audio) of the job duration's size classes; the dashboard names them.
SIZE_CLASSES: tuple[tuple[float, str], ...] = (
    (5 * 60, "under5min"),
    (30 * 60, "5to30min"),
    (120 * 60, "30to120min"),
    (float("inf"), "over120min"),
)


def size_class(duration_s: float) -> str:
    return next(name for bound, name in SIZE_CLASSES if duration_s < bound)


# What each function's X-Ray Tracer patches (Powertools Tracer(patch_modules=...)): only the
# clients it calls. Patching everything would import every supported library installed, httpx
# in the splitter included, and keep it in the container's memory.
TRACED_AWS = ("botocore",)
TRACED_AWS_AND_HTTP = ("botocore", "httpx")
