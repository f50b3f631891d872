"""Reading a stored file a chunk at a time, only the chunks a byte range covers.

The object store keeps a file as messages of one fixed size (the last one shorter) on the
subject ``$O.<bucket>.C.<nuid>`` of the stream ``OBJ_<bucket>``, in order. The client's own
``get`` reads every chunk into one bytes object, so 24 requests for the first byte of a 32 MiB
file held 24 copies of it; here a download holds one chunk at a time, whatever the file's size,
and a range reads only the chunks it overlaps. A read is a consumer of our own on the object's
subject from the first chunk it needs, which sends one chunk and the next only once that one is
acked. (Not the object store's direct gets: the gateway's user may not make them, see
``shared.bus_access``.) A range further in first finds its first chunk's sequence by walking the
object's chunks with headers only (a few hundred bytes each); an object's metadata is the last
message on its metadata subject, read the same way.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncGenerator

import nats.errors
import nats.js.errors
import prometheus_client
from nats.js import JetStreamContext, api
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_META_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

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

    async def read(self, start: int, end: int) -> AsyncGenerator[bytes, None]:
        """Bytes ``start``..``end`` (inclusive) in pieces of at most one chunk. The first piece
        is read before this returns, so a file gone missing is an error before anything is sent."""
        chunk_size = self.chunk_size or await self._first_chunk_size()
        first, last = start // chunk_size, end // chunk_size
        chunks = self._chunks_from(await self._sequence_of(first))
        data = await _first(chunks)
        return self._pieces(chunks, data, first, last, start - first * chunk_size, end - last * chunk_size)

    async def read_whole(self) -> AsyncGenerator[bytes, None]:
        """The whole file, chunk by chunk, checked against its digest at the end."""
        chunks = self._chunks_from(1)
        return self._checked(chunks, await _first(chunks))

    async def _pieces(
        self, chunks: AsyncGenerator[bytes, None], data: bytes, first: int, last: int, skip: int, stop: int
    ) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(chunks):
            for index in range(first, last + 1):
                if index > first:
                    data = await _next(chunks, self.subject)
                yield data[skip if index == first else 0 : stop + 1 if index == last else len(data)]

    async def _checked(self, chunks: AsyncGenerator[bytes, None], data: bytes) -> AsyncGenerator[bytes, None]:
        digest = hashlib.sha256()
        async with contextlib.aclosing(chunks):
            for index in range(self.chunks):
                if index:
                    data = await _next(chunks, self.subject)
                digest.update(data)
                yield data
        stored = (self.info.digest or "").removeprefix("SHA-256=")
        if base64.urlsafe_b64encode(digest.digest()).decode() != stored:
            raise DigestMismatch(self.info.name)

    async def _chunks_from(self, sequence: int) -> AsyncGenerator[bytes, None]:
        """The object's chunks from stream sequence ``sequence`` on, one sent at a time."""
        subscription = await self.js.subscribe(
            self.subject,
            stream=_STREAM,
            manual_ack=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=sequence,
                ack_policy=api.AckPolicy.EXPLICIT,
                max_ack_pending=1,
                # A download cut short leaves its consumer behind: the server drops it after this.
                inactive_threshold=_WALK_TIMEOUT * 2,
            ),
        )
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=_WALK_TIMEOUT)
                except TimeoutError:
                    raise ChunkMissing(self.subject) from None
                CHUNKS_READ.inc()
                await message.ack()  # the next one is on its way while this one is written
                yield message.data
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _first_chunk_size(self) -> int:
        """Files stored without their chunk size in the metadata: the first chunk's length."""
        async with contextlib.aclosing(self._chunks_from(1)) as chunks:
            return len(await _first(chunks)) or 1

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


async def _first(chunks: AsyncGenerator[bytes, None]) -> bytes:
    """The first chunk; the generator is closed (its consumer ended) if there is none."""
    try:
        return await anext(chunks)
    except BaseException:
        await chunks.aclose()
        raise


async def _next(chunks: AsyncGenerator[bytes, None], subject: str) -> bytes:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise ChunkMissing(subject) from None


async def object_info(js: JetStreamContext, name: str) -> api.ObjectInfo:
    """The current metadata of the object ``name`` (the last message on its metadata subject);
    ``ObjectNotFoundError`` when it has none or was deleted."""
    subject = OBJ_META_PRE_TEMPLATE.format(
        bucket=DEVICE_FILES_BUCKET, obj=base64.urlsafe_b64encode(name.encode()).decode()
    )
    subscription = await js.subscribe(
        subject,
        stream=_STREAM,
        ordered_consumer=True,
        config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT),
    )
    try:
        consumer = await subscription.consumer_info()
        delivered = consumer.delivered.consumer_seq if consumer.delivered is not None else 0
        if consumer.num_pending == 0 and delivered == 0:
            raise nats.js.errors.ObjectNotFoundError
        message = await subscription.next_msg(timeout=_WALK_TIMEOUT)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()
    info = api.ObjectInfo.from_response(json.loads(message.data))
    if info.deleted:
        raise nats.js.errors.ObjectNotFoundError
    return info
