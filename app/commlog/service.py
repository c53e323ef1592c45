"""Build, buffer, write, query and purge communication-log records.

Writing a row per request inline would add a database round trip to every gateway call, so
entries go to an in-memory buffer that a background task writes in batches (and flushes on
shutdown). The buffer is bounded: if the database is down for long, the oldest entries are
dropped and counted rather than exhausting memory.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import String, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.commlog.models import CommLog
from app.db import utcnow
from app.settings import Settings

logger = logging.getLogger("sluice.commlog")

COMMLOG_WRITTEN = Counter("sluice_commlog_written_total", "Comm-log rows written")
COMMLOG_DROPPED = Counter("sluice_commlog_dropped_total", "Comm-log entries dropped (buffer full)")
COMMLOG_BUFFERED = Gauge("sluice_commlog_buffered", "Comm-log entries waiting to be written")

REDACTED = "[REDACTED]"
_SECRET_HEADER = re.compile(r"authorization|cookie|api[-_]?key|token|secret|password|signature", re.I)
_SECRET_FIELD = re.compile(r"password|secret|token|api[-_]?key|authorization|credential", re.I)
_SECRET_FIELD_BYTES = re.compile(rb"password|secret|token|api[-_]?key|authorization|credential", re.I)


@lru_cache(maxsize=1024)
def _is_secret_header(name: str) -> bool:
    return _SECRET_HEADER.search(name) is not None


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers with every credential-bearing value replaced."""
    return {k: (REDACTED if _is_secret_header(k) else v) for k, v in headers.items()}


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if _SECRET_FIELD.search(str(k)) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    return value


def body_text(raw: bytes | None, limit: int, *, redact: bool = True) -> str | None:
    """A loggable body: secret JSON fields redacted (if `redact`), cut at `limit` bytes."""
    if not raw:
        return None
    # Parsing is the expensive part, so only bodies that mention a secret-looking name are parsed.
    if redact and raw[:1] in (b"{", b"[") and _SECRET_FIELD_BYTES.search(raw):
        try:
            raw = orjson.dumps(_redact_value(orjson.loads(raw)))
        except orjson.JSONDecodeError:
            pass
    if len(raw) > limit:
        return raw[:limit].decode("utf-8", "replace") + f"…[truncated {len(raw) - limit} bytes]"
    return raw.decode("utf-8", "replace")


COPY_COLUMNS = [c.name for c in CommLog.__table__.columns if c.name != "id"]
# Callers control some of these values (X-Client-ID, the path, the bodies): each text column's
# value is cut to its length and loses NUL characters, which PostgreSQL stores in no text, so
# that one bad value can never fail a whole batch.
_TEXT_COLUMNS = [(c.name, c.type.length) for c in CommLog.__table__.columns if isinstance(c.type, String)]


def _copy_value(value: Any) -> Any:
    # asyncpg's COPY takes json columns as text.
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


class CommLogWriter:
    """Buffers entries and writes them in batches from `run()`."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self._engine = engine
        self._enabled = settings.commlog_enabled
        self._interval = settings.commlog_flush_interval
        self._batch_size = settings.commlog_batch_size
        self._max = settings.commlog_buffer_max
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def enqueue(self, entry: dict[str, Any]) -> None:
        """Add an entry; never blocks and never touches the database."""
        if not self._enabled:
            return
        for name, limit in _TEXT_COLUMNS:
            value = entry.get(name)
            if isinstance(value, str):
                if limit is not None and len(value) > limit:
                    value = entry[name] = value[:limit]
                if "\x00" in value:
                    # PostgreSQL stores no NUL in text: the entry would be refused and lost.
                    entry[name] = value.replace("\x00", "\ufffd")
        if len(self._buffer) >= self._max:
            self._buffer.popleft()
            COMMLOG_DROPPED.inc()
        self._buffer.append(entry)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> int:
        """Write everything buffered now; entries of a failed batch go back to the buffer."""
        written = 0
        async with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft() for _ in range(min(self._batch_size, len(self._buffer)))]
                try:
                    written += await self._write_or_split(batch)
                except Exception:
                    # The database is unreachable: keep everything, in order, for the next try.
                    self._buffer.extendleft(reversed(batch))
                    raise
        COMMLOG_BUFFERED.set(len(self._buffer))
        return written

    async def _write_or_split(self, batch: list[dict[str, Any]]) -> int:
        """Write `batch`; if the database rejects its data, halve it until the bad rows are found.

        A row the database refuses on its own is dropped (logged and counted) rather than
        blocking every entry behind it forever. Connection failures propagate unchanged.
        """
        try:
            await self._write(batch)
        except (OSError, ConnectionError, TimeoutError):
            raise
        except Exception as exc:
            if not _is_data_error(exc):
                raise
            if len(batch) == 1:
                COMMLOG_DROPPED.inc()
                logger.error("comm-log entry rejected by the database and dropped: %s", type(exc).__name__)
                return 0
            middle = len(batch) // 2
            return await self._write_or_split(batch[:middle]) + await self._write_or_split(batch[middle:])
        COMMLOG_WRITTEN.inc(len(batch))
        return len(batch)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # COPY costs a fraction of the CPU of an INSERT per row, and this runs in the
                # same process (and on the same core) as the gateway's requests.
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                records = [tuple(_copy_value(entry.get(c)) for c in COPY_COLUMNS) for entry in batch]
                await driver.copy_records_to_table("comm_log", records=records, columns=COPY_COLUMNS)
            else:
                await conn.execute(insert(CommLog), batch)
                await conn.commit()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every interval (or sooner when a batch fills) until `stop`, then flush once more."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                logger.exception("comm-log flush failed; %d entries kept for the next try", self.pending)
            if stop.is_set():
                break
        await self.flush_on_shutdown()

    async def flush_on_shutdown(self) -> None:
        try:
            written = await self.flush()
            if written:
                logger.info("comm-log: %d entries flushed on shutdown", written)
        except Exception:
            logger.exception("comm-log: %d entries could not be written on shutdown", self.pending)

    def stop_waiting(self) -> None:
        self._wake.set()


def _is_data_error(exc: BaseException) -> bool:
    """True when the database refused the rows themselves (not the connection)."""
    import asyncpg
    from sqlalchemy.exc import DataError, IntegrityError, StatementError

    if isinstance(exc, DataError | IntegrityError):
        return True
    if isinstance(exc, StatementError) and exc.orig is not None:
        exc = exc.orig
    return isinstance(
        exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError | ValueError | TypeError
    )


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id behind a cursor; ValueError if it is not one of ours."""
    padded = cursor + "=" * (-len(cursor) % 4)
    text = base64.urlsafe_b64decode(padded.encode()).decode()
    if not text.startswith("id:"):
        raise ValueError("not a comm-log cursor")
    last_id = int(text[3:])
    if not 0 < last_id < 2**63:  # ids are positive BIGINTs
        raise ValueError("not a comm-log cursor")
    return last_id


async def list_entries(
    session: AsyncSession,
    *,
    client_id: str | None = None,
    status: int | None = None,
    error_code: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> tuple[Sequence[CommLog], int | None]:
    """Entries newest first, and the id to continue from (None when there are no more)."""
    query = select(CommLog).order_by(CommLog.id.desc()).limit(limit + 1)
    if client_id is not None:
        query = query.where(CommLog.client_id == client_id)
    if status is not None:
        query = query.where(CommLog.status == status)
    if error_code is not None:
        query = query.where(CommLog.error_code == error_code)
    if since is not None:
        query = query.where(CommLog.created_at >= since)
    if until is not None:
        query = query.where(CommLog.created_at < until)
    if before_id is not None:
        query = query.where(CommLog.id < before_id)
    rows = (await session.scalars(query)).all()
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1].id
    return rows, None


async def purge_older_than(
    sessionmaker: async_sessionmaker[AsyncSession], retention: timedelta, *, batch: int = 5000
) -> int:
    """Delete entries older than `retention`, in batches so no transaction grows large."""
    cutoff = utcnow() - retention
    total = 0
    while True:
        async with sessionmaker.begin() as session:
            ids = (
                await session.scalars(select(CommLog.id).where(CommLog.created_at < cutoff).limit(batch))
            ).all()
            if not ids:
                return total
            await session.execute(delete(CommLog).where(CommLog.id.in_(ids)))
        total += len(ids)
