"""Download a file over http(s) or from file://, verify its md5, and move it into place atomically.

One code path for every scheme: urllib.request.urlopen streams the bytes (1 MiB chunks) into a
temporary file next to `dest` while the md5 is computed on the fly. Transient failures (connection
errors, timeouts, HTTP 5xx, a body shorter than its Content-Length) are retried with exponential
backoff; permanent ones (HTTP 4xx, a missing local file, md5 mismatch) are not. `dest` only ever
appears complete and verified (os.replace of the verified temp file); on any failure the temp file
is removed and an existing `dest` is left untouched.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from linclass.files import atomic_file, md5_file
from linclass.settings import MAX_BACKOFF, Data, check, default

CHUNK_SIZE = 1 << 20  # 1 MiB
USER_AGENT = "linclass-download/0.1"


class DownloadError(RuntimeError):
    """A download failed for good (after retries, or with a non-retryable error)."""


class _Retryable(Exception):
    """Internal: a transient failure worth another attempt; str() is the one-line reason."""


def _one_line(x: object) -> str:
    return " ".join(str(x).split())


class _Progress:
    """Tiny stderr progress: at most ~20 lines (every 5% when the size is known, else at 1, 2, 4, ... MiB)."""

    def __init__(self, url: str, total: int | None, enabled: bool):
        self.url, self.total, self.enabled = url, total, enabled
        self.next_mark = 5 if total else 1 << 20  # percent, or bytes when the size is unknown
        self.t0 = time.monotonic()
        if enabled:
            size = f"{total / 2**20:.1f} MiB" if total else "unknown size"
            print(f"downloading {url} ({size})", file=sys.stderr, flush=True)

    def update(self, received: int) -> None:
        if not self.enabled:
            return
        if self.total:
            percent = 100 * received // self.total
            if percent >= self.next_mark:
                self._print(received, f"{percent:3d}%")
                self.next_mark = (percent // 5 + 1) * 5
        elif received >= self.next_mark:
            self._print(received, "")
            while self.next_mark <= received:
                self.next_mark *= 2

    def _print(self, received: int, prefix: str) -> None:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        mib = received / 2**20
        print(f"  {prefix} {mib:8.1f} MiB  {mib / elapsed:6.1f} MiB/s".rstrip(), file=sys.stderr, flush=True)


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length") if response.headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _opener(url: str) -> urllib.request.OpenerDirector:
    """urllib's opener, sending HTTP basic auth from LINCLASS_DATA_USER / LINCLASS_DATA_PASSWORD with the first
    request (never from the URL: it gets logged)."""
    passwords = urllib.request.HTTPPasswordMgrWithPriorAuth()
    if os.environ.get("LINCLASS_DATA_USER"):
        user, password = os.environ["LINCLASS_DATA_USER"], os.environ.get("LINCLASS_DATA_PASSWORD", "")
        passwords.add_password(None, url, user, password, is_authenticated=True)
    return urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(passwords))


def _fetch_once(url: str, out, timeout: float, progress: bool) -> str:
    """Stream url into the open binary file `out` (truncated first); return the md5 of what was written.

    Raises _Retryable for transient failures, DownloadError for permanent ones.
    """
    out.seek(0)
    out.truncate()
    h = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with _opener(url).open(request, timeout=timeout) as response:
            total = _content_length(response)
            bar = _Progress(url, total, progress)
            received = 0
            while chunk := response.read(CHUNK_SIZE):
                out.write(chunk)
                h.update(chunk)
                received += len(chunk)
                bar.update(received)
    except urllib.error.HTTPError as e:
        e.close()
        reason = f"HTTP {e.code} {_one_line(e.reason)}"
        if 500 <= e.code < 600:
            raise _Retryable(reason) from None
        raise DownloadError(f"{reason} for {url} (not retried)") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError):
            raise DownloadError(f"file not found for {url}: {_one_line(e.reason)}") from None
        raise _Retryable(_one_line(e.reason)) from None
    except http.client.IncompleteRead as e:
        raise _Retryable(f"truncated body: got {len(e.partial)} bytes, {e.expected} more expected") from None
    except (ConnectionError, TimeoutError, http.client.HTTPException) as e:
        raise _Retryable(f"{type(e).__name__}: {_one_line(e)}") from None
    # http.client (3.11) returns a short body silently when the server closes early: check ourselves.
    if total is not None and received < total:
        raise _Retryable(f"truncated body: got {received} of {total} bytes")
    return h.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str,
    *,
    retries: int = default(Data, "retries"),
    backoff: float = default(Data, "backoff"),
    timeout: float = default(Data, "timeout"),
    progress: bool = True,
) -> Path:
    """Download url to dest and verify its md5; return dest as a Path.

    url: http://, https:// or file:// (same code path). `retries` is the total number of attempts;
    attempt k (k >= 1) is followed by a sleep of min(backoff * 2**(k-1), MAX_BACKOFF) seconds.
    If dest already exists with the right md5, nothing is fetched.
    """
    check(Data, url=url, md5=md5, retries=retries, timeout=timeout, backoff=backoff)
    expected = md5.lower()

    dest = Path(dest)
    if dest.is_file() and md5_file(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    with atomic_file(dest, suffix=".part") as tmp, open(tmp, "wb") as out:
        def say_retrying(state: RetryCallState) -> None:
            if progress:
                why = state.outcome.exception() if state.outcome else "?"
                print(f"  attempt {state.attempt_number}/{retries} failed ({why}); retrying",
                      file=sys.stderr, flush=True)

        retrying = Retrying(retry=retry_if_exception_type(_Retryable), stop=stop_after_attempt(retries), reraise=True,
                            wait=wait_exponential(multiplier=backoff, max=MAX_BACKOFF), before_sleep=say_retrying)
        try:
            actual = retrying(_fetch_once, url, out, timeout, progress)
        except _Retryable as e:
            raise DownloadError(f"could not download {url} after {retries} attempts: {e}") from None
        out.flush()
        os.fsync(out.fileno())
        if actual != expected:
            raise DownloadError(f"md5 mismatch for {url}: expected {expected}, got {actual}")
    return dest


# ---- where the archive comes from on this machine ----
#
# params.yaml names the data set (data.name, the official data.url and data.md5): that is its
# identity, the same on every machine. Where a machine reads it from is a per-machine setting, so that
# switching to a mirror or a local copy changes no parameter and retrains nothing: the archive's md5
# (dvc.lock records the md5 of the file that was read) may differ, the preprocessed arrays do not.

SOURCE_URL_VAR = "LINCLASS_DATA_URL"
SOURCE_MD5_VAR = "LINCLASS_DATA_MD5"
SOURCE_FILE = "local.env"   # git-ignored, at the project root: the same two variables, KEY=value lines
SOURCE_HELP = (f"no internet? point this machine at a mirror or a local copy: export {SOURCE_URL_VAR}="
               f"file:///abs/path/cifar-10-python.tar.gz (and {SOURCE_MD5_VAR}=<its md5> if its bytes differ), "
               f"or write both lines to {SOURCE_FILE} at the project root; see README 'Where the data comes from'")


@dataclass(frozen=True)
class Source:
    """Where this machine reads the archive from, the md5 that file must have, and who said so."""
    url: str
    md5: str
    origin: str      # "params.yaml", "$LINCLASS_DATA_URL" or "local.env"


def resolve_source(data: Data, root: str | os.PathLike = ".", environ: Mapping[str, str] | None = None) -> Source:
    """The archive's source on this machine: $LINCLASS_DATA_URL, else <root>/local.env, else params.

    data: the `data` section of params.yaml (url, md5 = the official archive). A per-machine url
    without its own md5 must be a byte-identical mirror (the official md5 is checked).
    """
    environ = os.environ if environ is None else environ
    settings: Mapping[str, str] = {}
    origin = "params.yaml"
    if environ.get(SOURCE_URL_VAR):
        settings, origin = environ, f"${SOURCE_URL_VAR}"
    elif (Path(root) / SOURCE_FILE).is_file():
        settings, origin = {k: v or "" for k, v in dotenv_values(Path(root) / SOURCE_FILE).items()}, SOURCE_FILE
        if not settings.get(SOURCE_URL_VAR):
            raise ValueError(f"{Path(root) / SOURCE_FILE} has no {SOURCE_URL_VAR}=...; {SOURCE_HELP}")
    url = settings.get(SOURCE_URL_VAR) or data.url
    md5 = (settings.get(SOURCE_MD5_VAR) or data.md5).lower()
    try:
        check(Data, url=url, md5=md5)
    except ValueError as exc:
        raise ValueError(f"{exc} (from {origin})") from None
    return Source(url, md5, origin)


def fetch(data: Data, dest: str | os.PathLike, root: str | os.PathLike = ".", progress: bool = True) -> Source:
    """Download the archive from this machine's source (resolve_source) to dest; return the source.

    A failure to reach the official URL says how to use a mirror or a local copy instead.
    """
    source = resolve_source(data, root)
    try:
        download(source.url, dest, source.md5, retries=data.retries, timeout=data.timeout, backoff=data.backoff,
                 progress=progress)
    except DownloadError as exc:
        mismatch = "md5 mismatch" in str(exc)
        if source.origin == "params.yaml" and not mismatch:
            raise DownloadError(f"{exc}; {SOURCE_HELP}") from None
        if source.origin != "params.yaml" and mismatch and source.md5 == data.md5.lower():
            raise DownloadError(f"{exc} (the official archive's md5: {source.origin} gives no {SOURCE_MD5_VAR}); "
                                f"a copy of the same images with other bytes (a repack) needs its own: set "
                                f"{SOURCE_MD5_VAR}=<its md5> beside {SOURCE_URL_VAR}") from None
        raise
    return source
