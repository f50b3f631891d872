"""Reading a stored file a chunk at a time, only the chunks a byte range covers.

The object store keeps a file as messages of one fixed size (the last one shorter) on the
subject ``$O.<bucket>.C.<nuid>`` of the stream ``OBJ_<bucket>``, in order. The client's own
``get`` reads every chunk into one bytes object, so 24 requests for the first byte of a 32 MiB
file held 24 copies of it; here a download holds one chunk at a time, whatever the file's size,
and a range reads only the chunks it overlaps. Each chunk is one direct get by sequence (the
object store's stream allows direct gets): the next chunk is the next message on the object's
subject, so a download from the start needs no index; a range further in first finds its first
chunk's sequence by walking the object's chunks with headers only (a few hundred bytes each).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator

import nats.js.errors
import prometheus_client
from nats.js import JetStreamContext, api
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

from shared.projections import DEVICE_FILES_BUCKET

CHUNKS_READ = prometheus_client.Counter(
    "gateway_file_chunks_read_total", "Chunks of device files read from the object store"
)
_STREAM = OBJ_STREAM_TEMPLATE.format(bucket=DEVICE_FILES_BUCKET)
_WALK_TIMEOUT = 5  # seconds to wait for the next chunk's headers while looking for a range's start


class ChunkMissing(Exception):
    """The object's chunks are not (or no longer) where its metadata says: it was replaced or
    deleted meanwhile."""


class DigestMismatch(Exception):
    """A whole file read back did not hash to the digest stored with it."""


class FileChunks:
    """One stored version of a file (its ``ObjectInfo``), read as chunks."""

    def __init__(self, js: JetStreamContext, info: api.ObjectInfo) -> None:
        self.js = js
        self.info = info
        self.subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=DEVICE_FILES_BUCKET, obj=info.nuid)
        self.size = info.size or 0
        self.chunks = info.chunks or 0
        options = info.options
        self.chunk_size = options.max_chunk_size if options and options.max_chunk_size else None

    async def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start``..``end`` (inclusive) in pieces of at most one chunk. The first piece
        is read before this returns, so a file gone missing is an error before anything is sent."""
        chunk_size = self.chunk_size or await self._first_chunk_size()
        first, last = start // chunk_size, end // chunk_size
        sequence = await self._sequence_of(first)
        data, sequence = await self._chunk_from(sequence)
        return self._pieces(data, sequence, first, last, start - first * chunk_size, end - last * chunk_size)

    async def read_whole(self) -> AsyncIterator[bytes]:
        """The whole file, chunk by chunk, checked against its digest at the end."""
        data, sequence = await self._chunk_from(1)
        return self._checked(data, sequence)

    async def _pieces(
        self, data: bytes, sequence: int, first: int, last: int, skip: int, stop: int
    ) -> AsyncIterator[bytes]:
        for index in range(first, last + 1):
            if index > first:
                data, sequence = await self._chunk_from(sequence + 1)
            piece = data[skip if index == first else 0 : stop + 1 if index == last else len(data)]
            yield piece

    async def _checked(self, data: bytes, sequence: int) -> AsyncIterator[bytes]:
        digest = hashlib.sha256()
        for index in range(self.chunks):
            if index:
                data, sequence = await self._chunk_from(sequence + 1)
            digest.update(data)
            yield data
        stored = (self.info.digest or "").removeprefix("SHA-256=")
        if base64.urlsafe_b64encode(digest.digest()).decode() != stored:
            raise DigestMismatch(self.info.name)

    async def _chunk_from(self, sequence: int) -> tuple[bytes, int]:
        """The object's first chunk at or after ``sequence``, and its sequence."""
        try:
            message = await self.js.get_msg(
                _STREAM, seq=sequence, subject=self.subject, direct=True, next=True
            )
        except nats.js.errors.NotFoundError:
            raise ChunkMissing(self.subject) from None
        CHUNKS_READ.inc()
        if message.seq is None or message.data is None:
            raise ChunkMissing(self.subject)
        return message.data, message.seq

    async def _first_chunk_size(self) -> int:
        """Files stored without their chunk size in the metadata: the first chunk's length."""
        data, _ = await self._chunk_from(1)
        return len(data) or 1

    async def _sequence_of(self, index: int) -> int:
        """Where chunk ``index`` is: chunk 0 is the first message on the object's subject; a
        later one is counted off with headers only (other objects' chunks may lie between)."""
        if index == 0:
            return 1
        subscription = await self.js.subscribe(
            self.subject, stream=_STREAM, ordered_consumer=True, headers_only=True
        )
        try:
            for _ in range(index + 1):
                try:
                    message = await subscription.next_msg(timeout=_WALK_TIMEOUT)
                except TimeoutError:
                    raise ChunkMissing(self.subject) from None
            return message.metadata.sequence.stream
        finally:
            await subscription.unsubscribe()
