"""The verified-token cache: a user's token arrives again with each of their requests.

Only verified tokens are stored, keyed by provider and a digest of the exact token bytes, so
nothing about a failure is remembered and a changed byte is a different token. A hit still
re-checks the time claims (with the leeway) and that the signing key is still held; the level
check runs per request. Bounded in entries and in bytes; the least recently used leave first.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import NamedTuple

from texas.introspection.keys import PreparedKey
from texas.introspection.validation import Times
from texas.ops import telemetry

DEFAULT_MAX_BYTES = 4 * 1024 * 1024
# Per entry beyond its body: dict slot, key tuple and digest, Entry and Times objects (measured
# with tracemalloc at about 380 bytes on CPython 3.11).
_ENTRY_OVERHEAD = 400


class Entry(NamedTuple):
    """What a hit needs, and no more: the claims live on only inside `body`."""

    body: bytes  # the active answer, ready to send
    key: PreparedKey
    times: Times
    acr: object  # for the per-request level check


class TokenCache:
    def __init__(self, max_entries: int, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        # OrderedDict: a hit moves its entry to the end in O(1), and eviction pops the front
        # (next(iter(d)) on a plain dict walks over the slots deleted before it).
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @staticmethod
    def key(provider: str, token: str) -> bytes:
        """SHA-256 of the provider's name and the token: a cryptographic digest, so no token
        can be made to collide with another's entry."""
        return hashlib.sha256(f"{provider}\0{token}".encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> Entry | None:
        if self.max_entries == 0:
            return None
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)  # least recently used leaves first
        telemetry.inc_token_cache(entry is not None)
        return entry

    def put(self, key: bytes, entry: Entry) -> None:
        if self.max_entries == 0 or len(entry.body) + _ENTRY_OVERHEAD > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = entry
        self._bytes += len(entry.body) + _ENTRY_OVERHEAD
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, coldest = self._entries.popitem(last=False)
            self._bytes -= len(coldest.body) + _ENTRY_OVERHEAD
        telemetry.set_token_cache_entries(len(self._entries))

    def discard(self, key: bytes) -> None:
        if self._remove(key):
            telemetry.set_token_cache_entries(len(self._entries))

    def _remove(self, key: bytes) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._bytes -= len(entry.body) + _ENTRY_OVERHEAD
        return True
