"""SQLite jobs on messages: append a batch (dedup, seqs, first members), read a range, last seq.

The job functions are plain synchronous functions of a connection; `SqliteStorage`
(`mqim/storage/_sqlite.py`) runs them in its writer or reader thread, inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from typing import Any

from mqim.protocol import InvalidId, parse_conv
from mqim.storage._exceptions import StorageError
from mqim.storage._records import AppendResult, MessageRecord, NewMessage

_MSG_COLS = "conv, seq, server_id, sender, client_id, ts, kind, body"


def _dump_body(body: dict[str, Any]) -> str:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StorageError(f"message body is not JSON-serialisable: {exc}") from exc


def _message(row: tuple[Any, ...]) -> MessageRecord:
    body = json.loads(row[7])
    return MessageRecord(
        conv=row[0],
        seq=row[1],
        server_id=row[2],
        sender=row[3],
        client_id=row[4],
        ts=row[5],
        kind=row[6],
        body=body if isinstance(body, dict) else {},
    )


def _initial_members(message: NewMessage) -> tuple[str, ...]:
    """Who takes part in a conversation created by `message` (groups manage their own)."""
    try:
        kind, ids = parse_conv(message.conv)
    except InvalidId:
        return (message.sender,)
    return ids if kind == "d" else ()


def append(conn: sqlite3.Connection, messages: Sequence[NewMessage]) -> list[AppendResult]:
    results: list[AppendResult] = []
    for m in messages:
        seen = conn.execute(
            "SELECT conv, seq FROM idempotency WHERE sender = ? AND client_id = ?", (m.sender, m.client_id)
        ).fetchone()
        if seen is not None:
            row = conn.execute(
                f"SELECT {_MSG_COLS} FROM messages WHERE conv = ? AND seq = ?", seen
            ).fetchone()
            if row is None:
                raise StorageError(f"idempotency entry {m.sender}/{m.client_id} points to a missing message")
            results.append(AppendResult(record=_message(row), created=False))
            continue
        body = _dump_body(m.body)
        # One statement both creates the conversation and takes the next seq.
        seq = int(
            conn.execute(
                "INSERT INTO conversations (conv, last_seq) VALUES (?, 1) "
                "ON CONFLICT (conv) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                (m.conv,),
            ).fetchall()[0][0]
        )
        record = MessageRecord(
            conv=m.conv,
            seq=seq,
            server_id=uuid.uuid4().hex,
            sender=m.sender,
            client_id=m.client_id,
            ts=m.ts,
            kind=m.kind,
            body=dict(m.body),
        )
        conn.execute(
            f"INSERT INTO messages ({_MSG_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (m.conv, seq, record.server_id, m.sender, m.client_id, m.ts, m.kind, body),
        )
        conn.execute(
            "INSERT INTO idempotency (sender, client_id, conv, seq) VALUES (?, ?, ?, ?)",
            (m.sender, m.client_id, m.conv, seq),
        )
        if seq == 1:
            conn.executemany(
                "INSERT OR IGNORE INTO conv_members (user, conv) VALUES (?, ?)",
                [(user, m.conv) for user in _initial_members(m)],
            )
        results.append(AppendResult(record=record, created=True))
    return results


def get_messages(
    conn: sqlite3.Connection, conv: str, after_seq: int, before_seq: int | None, limit: int, newest: bool
) -> list[MessageRecord]:
    if limit <= 0:
        return []
    upper = before_seq if before_seq is not None else 2**63 - 1
    order = "DESC" if newest else "ASC"
    rows = conn.execute(
        f"SELECT {_MSG_COLS} FROM messages WHERE conv = ? AND seq > ? AND seq < ? "
        f"ORDER BY seq {order} LIMIT ?",
        (conv, after_seq, upper, limit),
    ).fetchall()
    if newest:
        rows.reverse()
    return [_message(row) for row in rows]


def last_seq(conn: sqlite3.Connection, conv: str) -> int:
    row = conn.execute("SELECT last_seq FROM conversations WHERE conv = ?", (conv,)).fetchone()
    return 0 if row is None else int(row[0])
