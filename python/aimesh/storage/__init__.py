"""Durable state behind one small interface (:class:`Storage`): messages and
acknowledgments, budgets and reservations, dedup records, endpoints. The
embedded default is SQLite (:class:`SqliteStorage`)."""

from __future__ import annotations

from pathlib import Path

from aimesh.storage.base import (
    BudgetStore,
    DedupRecord,
    PutResult,
    Reservation,
    Storage,
    StoredMessage,
)
from aimesh.storage.sqlite import SqliteStorage


def open_storage(data_dir: Path, *, durable: bool = True) -> Storage:
    """The storage for a data directory (SQLite in ``data_dir/aimesh.db``)."""
    return SqliteStorage(data_dir, durable=durable)


__all__ = [
    "BudgetStore",
    "DedupRecord",
    "PutResult",
    "Reservation",
    "SqliteStorage",
    "Storage",
    "StoredMessage",
    "open_storage",
]
