"""Credentials out of URLs before anything is logged, stored or printed (no imports beyond `re`)."""
from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")


def redact_url(text: str) -> str:
    """`text` with the user-info (user:password@) of every URL in it removed.

    'http://user:s3cret@host/x.tar.gz' -> 'http://host/x.tar.gz'; text without such a URL is returned as is.
    """
    return _USERINFO.sub(r"\g<scheme>", text) if isinstance(text, str) else text


def has_credentials(url: str) -> bool:
    """True when `url` carries user-info (user:password@ or user@) before its host."""
    return bool(_USERINFO.match(url))
