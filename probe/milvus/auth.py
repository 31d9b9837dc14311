"""Credentials as Milvus expects them: gRPC metadata `authorization` = base64(token).

A token with `:` is `user:password`; without, an API key. `user` + `password` are sent
as base64 of `user:password`. Secrets may live in files (a mounted Kubernetes Secret);
those are re-read when the file changes, so rotation needs no restart.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from dataclasses import dataclass, field

MASK = "***"


class Secret:
    """A string that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretFileError(Exception):
    """A secret file could not be read; the message names the file, never its content."""


SETTLED_NS = 2_000_000_000
"""A file changed less than this long before we read it may change again without its
stamp moving (timestamps tick coarsely: a same-length rewrite in the same tick keeps
mtime, ctime and size); such a read is not trusted until the file has settled."""


@dataclass(eq=False)
class _FileCache:
    key: tuple[int, int, int, int, int] | None = None
    settled: bool = False
    """The read happened well after the file's last change: the stamp can be trusted."""
    value: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class SecretFile:
    """A secret read from `path`, re-read whenever the file behind it changes.

    Kubernetes updates a mounted Secret by swapping the `..data` symlink; `os.stat`
    follows links, so the new file shows up as a new (device, inode, mtime, ctime, size).
    A rewrite in place within one timestamp tick keeps that stamp, so a file read soon
    after it changed is read again until it has settled (git's "racily clean" rule).
    """

    path: str
    _cache: _FileCache = field(default_factory=_FileCache, compare=False, repr=False)

    def read(self) -> str:
        try:
            st = os.stat(self.path)
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
            cache = self._cache
            with cache.lock:
                if cache.key != key or not cache.settled:
                    read_at = time.time_ns()
                    with open(self.path, encoding="utf-8") as fh:
                        cache.value = fh.read().strip()
                    cache.key = key
                    cache.settled = read_at - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS
                return cache.value
        except (OSError, UnicodeDecodeError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            )
            raise SecretFileError(f"cannot read secret file {self.path}: {reason}") from None


@dataclass(frozen=True)
class Credentials:
    """Where a target's credential comes from: a token, or a user and a password."""

    token: Secret | SecretFile | None = None
    user: str | None = None
    password: Secret | SecretFile | None = None

    def _token_value(self) -> str | None:
        if self.token is not None:
            return self.token.reveal() if isinstance(self.token, Secret) else self.token.read()
        if self.user is not None and self.password is not None:
            password = (
                self.password.reveal()
                if isinstance(self.password, Secret)
                else self.password.read()
            )
            return f"{self.user}:{password}"
        return None

    def bearer(self) -> str | None:
        """The token as the REST API takes it (`Authorization: Bearer <token>`).

        Raises SecretFileError when a secret file can't be read.
        """
        return self._token_value() or None

    def authorization(self) -> str | None:
        """The `authorization` metadata value, or None when there is no credential.

        Raises SecretFileError when a secret file can't be read.
        """
        token = self._token_value()
        if not token:
            return None
        return base64.b64encode(token.encode("utf-8")).decode("ascii")

    def _secrets(self) -> list[str]:
        found: list[str] = []
        for source in (self.token, self.password):
            if isinstance(source, Secret):
                found.append(source.reveal())
            elif isinstance(source, SecretFile) and source._cache.key is not None:
                found.append(source._cache.value)
        try:
            token = self._token_value()
        except SecretFileError:
            token = None
        if token:
            found.append(token)
            found.append(base64.b64encode(token.encode("utf-8")).decode("ascii"))
            if ":" in token:  # user:password — the password alone is a secret too
                found.append(token.split(":", 1)[1])
        # Longest first, so a token is masked whole before any part of it.
        return sorted({s for s in found if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with the token, password and their base64 forms masked."""
        for secret in self._secrets():
            text = text.replace(secret, MASK)
        return text
