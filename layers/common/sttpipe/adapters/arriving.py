"""A file that is read while it is still being downloaded.

The splitter decodes an upload as it arrives instead of after: a read waits only for the bytes
it asks for. Probing needs the end of a file too (a WAV's trailing chunks, the last seconds of
a compressed file, an MP4's index), so a download fetches a tail first, then streams the rest
from the start; the whole file's SHA-256 is known once the last byte is in.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading


class ArrivingFile(io.RawIOBase):
    """Read side of a local file of known `size` that a writer fills: `tail_from` onwards is
    there from the start, the rest arrives in order (`arrived`). Reads and seeks within the
    file wait for what they need; the writer's error, if any, is raised in the reader."""

    def __init__(self, path: str, size: int, *, tail_from: int | None = None) -> None:
        super().__init__()
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self.name = path
        self.size = size
        self.tail_from = size if tail_from is None else tail_from
        self._head = 0  # bytes [0, _head) have arrived
        self._digest = hashlib.sha256()
        self._sha256: str | None = None
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    # ---- the writer's side ----

    def arrived(self, data: bytes | memoryview) -> None:
        """The next bytes of the head, already written to the file, are there."""
        with self._changed:
            self._digest.update(data)
            self._head += memoryview(data).nbytes
            self._changed.notify_all()

    def finished(self, tail: bytes | memoryview = b"") -> None:
        """Everything arrived; `tail` is the content from `tail_from` on (for the hash)."""
        with self._changed:
            self._digest.update(tail)
            self._sha256 = self._digest.hexdigest()
            self._head = self.size
            self._changed.notify_all()

    def failed(self, error: BaseException) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()

    # ---- the reader's side ----

    @property
    def sha256(self) -> str | None:
        """The whole file's SHA-256 once all of it arrived; None before."""
        return self._sha256

    def wait_until_complete(self) -> str:
        """Wait until the writer has finished (the bytes may be there before, as the tail);
        the whole file's SHA-256."""
        with self._changed:
            self._changed.wait_for(lambda: self._sha256 is not None or self._error is not None)
            if self._error is not None:
                raise self._error
            assert self._sha256 is not None
            return self._sha256

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        start = self._file.tell()
        end = min(start + view.nbytes, self.size)
        if end <= start:
            return 0
        self._wait_for(start, end)
        return self._file.readinto(view[: end - start]) or 0

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:  # the file on disk may still be short: use the known size
            offset, whence = self.size + offset, os.SEEK_SET
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()

    def _wait_for(self, start: int, end: int) -> None:
        def there() -> bool:
            # [start, end) lies in [0, head) + [tail_from, size): the head grows up to tail_from.
            return (
                self._error is not None
                or start >= self.tail_from
                or self._head >= min(end, self.tail_from)
            )

        with self._changed:
            self._changed.wait_for(there)
            if self._error is not None:
                raise self._error
