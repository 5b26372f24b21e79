"""The AEF as canonical JSON bytes, streamed: encoded from table pieces, frozen into `submission_chunks`
as they come, read back byte for byte, and parsed back into pieces without holding a whole version.

Canonical JSON (keys in AEF order, no spaces, UTF-8) is what a frozen version is stored and served as. A
document is `{"party":…,"year":…,"version":…,"tables":{"submission":{…},"authorizations":[…],…}}`; the
encoder writes it piece by piece, and the result is byte for byte `canonical_json` of the whole document
(a test holds the two together).
"""

import codecs
import hashlib
import json
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kit.db import Database
from services.reporting.exports import Pieces
from services.reporting.models import submission_chunks, submissions

__all__ = [
    "CHUNK_BYTES",
    "FrozenWriter",
    "canonical_json",
    "document_chunks",
    "frozen_chunks",
    "frozen_pieces",
]

#: Bytes per `submission_chunks` row: large enough that a million-action year is ~700 rows, small enough
#: that a chunk in flight is nothing next to the service's memory.
CHUNK_BYTES = 1 << 20
#: Rows per piece when a frozen version is parsed back.
PIECE_ROWS = 5000

_DECODER = json.JSONDecoder()


def canonical_json(value: Any) -> bytes:
    """The bytes a frozen version is stored and served as: keys in AEF order, no spaces, UTF-8.

    orjson writes what `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` writes for every
    string, integer, null and boolean (a unit test holds the two together over every code point), twenty
    times faster; floats under 1e-4 differ in form only (`1e-7`, not `1e-07`), and no quantity the
    registry computes comes near one.
    """
    return orjson.dumps(value)


async def document_chunks(head: dict[str, Any], pieces: Pieces) -> AsyncIterator[bytes]:
    """`canonical_json({**head, "tables": {...}})`, in chunks, from the tables' pieces (a table may come
    in several consecutive pieces; `submission` comes as one piece holding its one row)."""
    yield canonical_json(head)[:-1] + b',"tables":{'
    current: str | None = None
    in_array = False
    separator = b""
    async for table, rows in pieces:
        if table != current:
            prefix = b"" if current is None else b"]," if in_array else b","
            current = table
            if table == "submission":
                yield prefix + b'"submission":' + canonical_json(rows[0])
                in_array = False
                continue
            yield prefix + b'"' + table.encode() + b'":['
            in_array, separator = True, b""
        if rows:
            yield separator + canonical_json(rows)[1:-1]  # one call for the whole piece
            separator = b","
    yield b"]}}" if in_array else b"}}"


class FrozenWriter:
    """Claims a version's `submissions` row, then stores its bytes as they come, `CHUNK_BYTES` a row,
    inside the caller's write transaction, hashing them on the way (the version's `sha256`)."""

    def __init__(self, session: AsyncSession, key: dict[str, Any]) -> None:
        self.session = session
        self.key = key
        self.buffer = bytearray()
        self.seq = 0
        self.size = 0
        self.digest = hashlib.sha256()

    async def claim(self, submitted_at: Any, submitted_by: str) -> None:
        """Insert the version's row (a racing submission of the same version fails here, early)."""
        await self.session.execute(
            insert(submissions).values(
                **self.key, submitted_at=submitted_at, submitted_by=submitted_by, size=0, sha256=""
            )  # size and digest are set by `close`, in the same transaction
        )

    async def write(self, data: bytes) -> None:
        self.buffer += data
        self.size += len(data)
        self.digest.update(data)
        while len(self.buffer) >= CHUNK_BYTES:
            await self._store(bytes(self.buffer[:CHUNK_BYTES]))
            del self.buffer[:CHUNK_BYTES]

    async def _store(self, data: bytes) -> None:
        await self.session.execute(insert(submission_chunks).values(**self.key, seq=self.seq, bytes=data))
        self.seq += 1

    async def close(self) -> None:
        if self.buffer or self.seq == 0:
            await self._store(bytes(self.buffer))
            self.buffer.clear()
        where = [submissions.c[name] == value for name, value in self.key.items()]
        await self.session.execute(
            update(submissions).where(*where).values(size=self.size, sha256=self.sha256)
        )

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the bytes written so far."""
        return self.digest.hexdigest()


async def frozen_chunks(db: Database, key: dict[str, Any]) -> AsyncIterator[bytes]:
    """A frozen version's bytes, a chunk per short read: chunks never change once committed, so nothing
    needs one snapshot, and a slow client never holds a connection."""
    where = [submission_chunks.c[name] == value for name, value in key.items()]
    for seq in count():
        async with db.read() as session:
            data = (
                await session.execute(
                    select(submission_chunks.c.bytes).where(*where, submission_chunks.c.seq == seq)
                )
            ).scalar_one_or_none()
        if data is None:
            return
        yield bytes(data)


class _Parser:
    """Reads canonical JSON from chunks: punctuation one character at a time, values with the C decoder."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.chunks = chunks
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.done = False

    async def _more(self) -> bool:
        if self.done:
            return False
        chunk = await anext(self.chunks, None)
        if chunk is None:
            self.done = True
            tail = self.decoder.decode(b"", final=True)
        else:
            tail = self.decoder.decode(chunk)
        self.text, self.pos = self.text[self.pos :] + tail, 0
        return chunk is not None or bool(tail)

    async def peek(self) -> str:
        while self.pos >= len(self.text):
            if not await self._more():
                raise ValueError("a frozen version ended early")
        return self.text[self.pos]

    async def expect(self, character: str) -> None:
        if await self.peek() != character:
            raise ValueError(
                f"expected {character!r} at a frozen version's {self.text[self.pos : self.pos + 20]!r}"
            )
        self.pos += 1

    async def value(self) -> Any:
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if not await self._more():
                    raise
                continue
            # A value ending exactly at the end of the text may go on in the next chunk (a number).
            if end < len(self.text) or not await self._more():
                self.pos = end
                return value

    async def head(self) -> dict[str, Any]:
        await self.expect("{")
        head: dict[str, Any] = {}
        while True:
            key = await self.value()
            await self.expect(":")
            if key == "tables":
                return head
            head[key] = await self.value()
            await self.expect(",")

    async def pieces(self) -> Pieces:
        await self.expect("{")
        while True:
            table = await self.value()
            await self.expect(":")
            if await self.peek() != "[":
                yield table, [await self.value()]
            else:
                self.pos += 1
                batch: list[dict[str, Any]] = []
                if await self.peek() == "]":
                    self.pos += 1
                else:
                    while True:
                        batch.append(await self.value())
                        if len(batch) == PIECE_ROWS:
                            yield table, batch
                            batch = []
                        if await self.peek() == "]":
                            self.pos += 1
                            break
                        await self.expect(",")
                yield table, batch
            if await self.peek() == "}":
                return
            await self.expect(",")


async def frozen_pieces(chunks: AsyncIterator[bytes]) -> tuple[dict[str, Any], Pieces]:
    """A frozen version's head (`party`, `year`, `version`) and its tables as pieces, parsed as the
    chunks arrive (a table's rows `PIECE_ROWS` at a time)."""
    parser = _Parser(chunks)
    return await parser.head(), parser.pieces()
