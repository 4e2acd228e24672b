"""SQLite jobs on a user's read and delivered cursors and its conversation states.

The job functions are plain synchronous functions of a connection; `SqliteStorage`
(`mqim/storage/_sqlite.py`) runs them in its writer or reader thread, inside its transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from mqim.storage._records import ConvState
from mqim.storage._sqlite_messages import last_seq

_STATE_SQL = (
    "SELECT coalesce((SELECT last_seq FROM conversations WHERE conv = :conv), 0), "
    "coalesce((SELECT read_seq FROM cursors WHERE user = :user AND conv = :conv), 0), "
    "coalesce((SELECT delivered_seq FROM cursors WHERE user = :user AND conv = :conv), 0)"
)


def _conv_state(conn: sqlite3.Connection, user_id: str, conv: str) -> ConvState:
    last, read, delivered = conn.execute(_STATE_SQL, {"user": user_id, "conv": conv}).fetchone()
    return ConvState(conv=conv, last_seq=last, read_seq=read, delivered_seq=delivered)


def advance_cursor(
    conn: sqlite3.Connection, user_id: str, conv: str, read_seq: int | None, delivered_seq: int | None
) -> ConvState:
    last = last_seq(conn, conv)
    # Cursors never pass the last stored seq and never move back.
    read = 0 if read_seq is None else max(0, min(read_seq, last))
    delivered = 0 if delivered_seq is None else max(0, min(delivered_seq, last))
    conn.execute(
        "INSERT INTO cursors (user, conv, read_seq, delivered_seq) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user, conv) DO UPDATE SET read_seq = max(read_seq, excluded.read_seq), "
        "delivered_seq = max(delivered_seq, excluded.delivered_seq)",
        (user_id, conv, read, delivered),
    )
    return _conv_state(conn, user_id, conv)


def conv_states(conn: sqlite3.Connection, user_id: str, convs: Sequence[str] | None) -> list[ConvState]:
    if convs is None:
        rows = conn.execute(
            "SELECT m.conv, coalesce(c.last_seq, 0), coalesce(k.read_seq, 0), coalesce(k.delivered_seq, 0) "
            "FROM conv_members m "
            "LEFT JOIN conversations c ON c.conv = m.conv "
            "LEFT JOIN cursors k ON k.user = m.user AND k.conv = m.conv "
            "WHERE m.user = ? ORDER BY m.conv",
            (user_id,),
        )
        return [ConvState(conv=r[0], last_seq=r[1], read_seq=r[2], delivered_seq=r[3]) for r in rows]
    return [_conv_state(conn, user_id, conv) for conv in dict.fromkeys(convs)]
