"""Why a recording cannot be used, worded for the person who uploaded it.

Every error here is permanent: the same bytes fail the same way, so retrying cannot help
(`retryable` mirrors `sttpipe.speech.base.SpeechError`). `reason` is the user-facing text;
internals (paths, FFmpeg codes) stay in the chained exception, never in the reason.
"""

from __future__ import annotations


class AudioError(Exception):
    retryable = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmptyAudioError(AudioError):
    """A zero-length file, or a valid file that holds no audio samples."""


class InvalidAudioError(AudioError):
    """Unreadable, corrupt, or not audio at all (random bytes with an audio extension)."""


class TruncatedAudioError(InvalidAudioError):
    """The header promises more audio than the file holds, or its end is damaged."""


class UnsupportedCodecError(AudioError):
    """Valid audio in a codec the pipeline does not accept."""


class LimitExceededError(AudioError):
    """Over a configured limit; checked before any work is done."""


class AudioTooLongError(LimitExceededError):
    pass


class AudioTooLargeError(LimitExceededError):
    pass


class NoSpeechError(AudioError):
    """The whole recording was decoded and no speech was found in it."""
