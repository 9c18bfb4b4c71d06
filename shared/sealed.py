"""Secrets the loop must keep usable, kept encrypted at rest: webhook signing secrets (delivery signs
with them) and, with publishable keys, identity secrets (ingest recomputes the hash). A database
dump or a backup alone can neither sign a webhook nor forge an identity: the key is not in it.

AES-256-GCM (`cryptography`'s AESGCM): a random 96-bit nonce per value, and the value's place (the
row it belongs to) as associated data, so a sealed value copied into another row does not open. A
sealed value is text: `v1:<key id>:<base64url(nonce + ciphertext and tag)>`, the key id being the
first 8 hex digits of the key's SHA-256, so each value names the key that sealed it.

The key: `NPS_SECRETS_KEY`, 32 random bytes in base64url (`nps secrets new-key` prints one; `nps up`
keeps one in var/secrets-key for the embedded database). Rotation: give the services the new key
as NPS_SECRETS_KEY and the old one as NPS_SECRETS_KEY_PREVIOUS (they open values sealed with
either), run `nps secrets rotate` (re-seals every stored value with the new key), then drop the old
one (docs/privacy.md)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
NONCE_BYTES = 12


class SecretsKeyMissing(RuntimeError):
    """A sealed value must be made or opened and no NPS_SECRETS_KEY is set."""


class CannotOpen(ValueError):
    """Not a sealed value, sealed with a key that is not given, for another row, or tampered with."""


def new_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def parse_key(text: str) -> bytes:
    """A key as NPS_SECRETS_KEY holds it; ValueError says what is wrong (never the key)."""
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("NPS_SECRETS_KEY is not base64url (make one with `nps secrets new-key`)") from None
    if len(raw) != 32:
        raise ValueError(
            f"NPS_SECRETS_KEY must be 32 bytes (base64url), not {len(raw)}: make one with `nps secrets new-key`"
        )
    return raw


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


class Sealer:
    """Seals with the current key; opens what the current or a previous key sealed."""

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self._current = AESGCM(current)
        self._keys = {key_id(k): AESGCM(k) for k in (*previous, current)}

    @classmethod
    def of(cls, current: str, previous: str | None = None) -> Sealer:
        return cls(parse_key(current), [parse_key(previous)] if previous else [])

    def seal(self, plaintext: str, place: str) -> str:
        """`place`: what the value belongs to (e.g. `delivery.subscriptions:wh_…`), authenticated with it."""
        nonce = os.urandom(NONCE_BYTES)
        box = self._current.encrypt(nonce, plaintext.encode(), place.encode())
        return f"{VERSION}:{self.current_id}:{base64.urlsafe_b64encode(nonce + box).decode()}"

    def open(self, sealed: str, place: str) -> str:
        version, _, rest = sealed.partition(":")
        found, _, body = rest.partition(":")
        if version != VERSION or not body:
            raise CannotOpen("not a sealed value")
        aead = self._keys.get(found)
        if aead is None:
            raise CannotOpen(f"sealed with key {found}, which is neither NPS_SECRETS_KEY nor NPS_SECRETS_KEY_PREVIOUS")
        try:
            raw = base64.urlsafe_b64decode(body)
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], place.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise CannotOpen(f"does not open for {place}: altered, or moved from another row") from None

    def is_current(self, sealed: str) -> bool:
        """Whether `sealed` is already sealed with the current key (a rotation skips it)."""
        return sealed.startswith(f"{VERSION}:{self.current_id}:")


def is_sealed(value: str) -> bool:
    return value.startswith(f"{VERSION}:")
