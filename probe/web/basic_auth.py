"""Basic auth against bcrypt hashes, as exporter-toolkit checks `basic_auth_users`.

Imported only when the web config has users: `bcrypt` is not loaded otherwise.

A bcrypt check costs milliseconds of CPU on purpose; a scraper sends the same
credentials every 15 s. As exporter-toolkit does, verdicts are cached by a digest of
(user, hash, password) — the password itself is never kept — and checks run one at a
time, so a flood of wrong guesses costs one core at most. An unknown user is checked
against a dummy hash, so the time taken does not tell which users exist; passwords are
compared by bcrypt's own constant-time check, never with `==`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

CACHE_SIZE = 100
"""Verdicts kept (exporter-toolkit keeps 100)."""

DUMMY_COST = 10
"""Cost of the hash unknown users are checked against (htpasswd -B's default)."""


class BasicAuth:
    """Checks `Authorization: Basic ...` headers against user → bcrypt hash."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {user: hashed.encode("ascii") for user, hashed in users.items()}
        self._verdicts: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()
        self._bcrypt = threading.Lock()
        self._dummy = bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(DUMMY_COST))

    def allows(self, header: str | None) -> bool:
        """Whether the header carries a known user and that user's password."""
        credentials = _credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self._users.get(user)
        known = hashed is not None
        if hashed is None:
            hashed = self._dummy
        key = hashlib.sha256(b"\0".join((user.encode("utf-8"), hashed, password))).digest()
        with self._lock:
            verdict = self._verdicts.get(key)
            if verdict is not None:
                self._verdicts.move_to_end(key)
        if verdict is None:
            with self._bcrypt:
                verdict = _checkpw(password, hashed)
            with self._lock:
                self._verdicts[key] = verdict
                while len(self._verdicts) > CACHE_SIZE:
                    self._verdicts.popitem(last=False)
        return known and verdict


def _checkpw(password: bytes, hashed: bytes) -> bool:
    # `$2y$` (htpasswd's) is `$2b$` by another name; the bcrypt package wants 2a/2b.
    if hashed.startswith(b"$2y$"):
        hashed = b"$2b$" + hashed[4:]
    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from `Basic <base64(user:password)>`, or None."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None
