"""Stable ids: a uuid5 of the id that caused them, for every sub-domain's ids."""

from __future__ import annotations

import hashlib
import uuid

# Ids derive from the response_id, so a redelivered response maps to the same follow-up and
# ticket, and a consumer seeing a ticket event twice can tell it is the same ticket.
_NAMESPACE = uuid.UUID("6f1c1f8e-5b1a-4c53-9d3e-2b8f0c4a7e11")


def stable_hex(name: str) -> str:
    """`uuid.uuid5(_NAMESPACE, name).hex`, without building UUID objects (twice as quick, and
    every response needs one or two)."""
    digest = bytearray(hashlib.sha1(_NAMESPACE.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()
