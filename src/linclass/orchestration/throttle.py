"""Wrong passwords, throttled: at most `per_user` failed logins per user name and `per_address` per client
address within `window` seconds; past that, a login attempt is refused at once (no password check).

User names that do not exist are counted exactly like existing ones, so the throttle does not tell them
apart. Credentials that logged in successfully are remembered (as an HMAC with a key of this process, not
the password) and pass while their user or address is throttled: a teammate's running training is not
locked out by someone else's flood from the same machine, only new logins wait.

    digest = throttle.digest(user, password)
    if not throttle.known_good(digest):
        if throttle.retry_after(user, address): refuse (429)
        throttle.begin(user, address)          # an attempt in flight counts toward the limits
    ... check the password ...
    throttle.end(user, address, digest, ok, counted=<begin was called>)

One process's memory: with several server workers, each counts on its own.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import Counter, OrderedDict, deque


class Throttle:
    def __init__(self, per_user: int = 10, per_address: int = 30, window: float = 60.0,
                 remember_seconds: float = 3600.0, max_keys: int = 10_000, clock=time.monotonic):
        self.limits = {"user": per_user, "address": per_address}
        self.window, self.remember_seconds, self.max_keys, self.clock = window, remember_seconds, max_keys, clock
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._pending: Counter[tuple[str, str]] = Counter()
        self._good: OrderedDict[bytes, float] = OrderedDict()
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    def digest(self, user: str, password: str) -> bytes:
        return hmac.new(self._key, f"{user}\0{password}".encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def known_good(self, digest: bytes) -> bool:
        now = self.clock()
        with self._lock:
            expiry = self._good.get(digest)
            return expiry is not None and expiry > now

    def retry_after(self, user: str, address: str) -> float:
        """0 if a login attempt may go ahead now, else the seconds until one may."""
        now = self.clock()
        with self._lock:
            return max(self._wait(key, now) for key in _keys(user, address))

    def _wait(self, key: tuple[str, str], now: float) -> float:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) + self._pending[key] < self.limits[key[0]]:
            return 0.0
        # attempts in flight count too: a burst cannot slip through before its failures are recorded
        return max(times[0] + self.window - now, 1.0) if times else 1.0

    def begin(self, user: str, address: str) -> None:
        with self._lock:
            self._pending.update(_keys(user, address))

    def end(self, user: str, address: str, digest: bytes, ok: bool | None, counted: bool = True) -> None:
        """The verdict on an attempt (None: the password was not checked); `counted`: begin() was called."""
        now = self.clock()
        with self._lock:
            if counted:
                self._pending.subtract(_keys(user, address))
                self._pending = +self._pending   # keys with no attempt in flight go
            if ok:
                self._good[digest] = now + self.remember_seconds
                self._good.move_to_end(digest)
            elif ok is False:
                self._good.pop(digest, None)
                for key in _keys(user, address):
                    self._failures.setdefault(key, deque()).append(now)
                    self._failures.move_to_end(key)
            for table in (self._failures, self._good):   # bounded memory, oldest keys go first
                while len(table) > self.max_keys:
                    table.popitem(last=False)


def _keys(user: str, address: str) -> tuple[tuple[str, str], ...]:
    return ("user", user), ("address", address)
