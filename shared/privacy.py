"""Pseudonyms for personal ids: what a service keeps when it must recognise a person later (to
apply an erasure to events that arrive after it) without keeping who they are."""

from __future__ import annotations

import functools
import hashlib


@functools.lru_cache(maxsize=65_536)  # a respondent's events arrive together (one partition)
def respondent_key(respondent_id: str) -> str:
    """SHA-256 of the respondent id: enough to apply an erasure, not the id itself. The same in
    SQL, for migrations: encode(sha256(convert_to(respondent_id, 'UTF8')), 'hex')."""
    return hashlib.sha256(respondent_id.encode()).hexdigest()
