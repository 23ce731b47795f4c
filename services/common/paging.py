"""Keyset paging, newest first, shared by the admin listings: an opaque cursor holding the
(created_at, id) of the last row of a page."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime, timezone

from services.common.errors import invalid
from services.common.validation import to_utc

# Sorts after every real (created_at, id): the cursor of the first page.
FIRST_PAGE = (datetime.max.replace(tzinfo=timezone.utc), uuid.UUID(int=2**128 - 1))


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID]:
    if not cursor:
        return FIRST_PAGE
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, _, rid = raw.partition("|")
        parsed = datetime.fromisoformat(created)
        utc = to_utc(parsed) if parsed.tzinfo is not None else None
        if utc is None:
            raise ValueError("not an instant PostgreSQL can compare")
        return utc, uuid.UUID(rid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("before is not a cursor this API returned.", "before") from None


def next_cursor(rows: list, limit: int, at: str = "created_at") -> str | None:
    """Rows were fetched with LIMIT limit + 1: a cursor when there is more (`at`: the
    column the listing is ordered by, with the id)."""
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return encode_cursor(last[at], last["id"])
