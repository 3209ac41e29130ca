"""What a SQLite error means for a user, in one place (the journal and the memory store both translate with it)."""

from __future__ import annotations

import sqlite3

__all__ = ["sqlite_hint"]


def sqlite_hint(exc: sqlite3.Error, kind: str) -> str:
    """How to fix what ``exc`` reports, for a SQLite file that is ``kind`` ("an agentflow journal", "a memory store").

    >>> sqlite_hint(sqlite3.OperationalError("database is locked"), "a memory store")
    'another process holds the write lock for longer than busy_timeout_s; raise it or retry'
    """
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and "no such table" in text:
        return f"the file is damaged (a table was dropped) or is not {kind}: restore it from a backup"
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return "another process holds the write lock for longer than busy_timeout_s; raise it or retry"
    if "readonly" in text or "read-only" in text:
        return "the file or its folder is read-only: make it writable or choose another path"
    if "disk is full" in text or "database or disk is full" in text:
        return "the disk is full: free space and retry"
    if "not a database" in text or "malformed" in text:
        return f"the file is not {kind} or is corrupt: restore it from a backup or choose another path"
    return f"check that the file is {kind}, readable and writable, on a local disk"
