"""Referral codes. Pure."""

from __future__ import annotations

import base64


def referral_code(token: bytes) -> str:
    """A referral code from an unguessable token: 16 URL-safe characters (80 bits), `r` first."""
    return "r" + base64.b32encode(token[:10]).decode().lower()
