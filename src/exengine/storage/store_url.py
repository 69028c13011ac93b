"""Store URLs (``s3://bucket/prefix``) as opposed to local folders, and their credentials: plain
text, no store library needed (front ends check them before anything is imported or made)."""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["credentials_in", "is_store_url", "local_path", "redact_url", "refuse_credentials"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


def is_store_url(location: Any) -> bool:
    """True for a store URL such as ``s3://bucket/prefix`` (``file://`` URLs are local folders)."""
    match = _URL.match(location) if isinstance(location, str) else None
    return match is not None and match.group(1).lower() != "file"


def local_path(location: str | os.PathLike[str]) -> str:
    """The folder a location names (``file://`` taken off)."""
    location = os.fspath(location)
    return location[len("file://") :] if location.lower().startswith("file://") else location


def credentials_in(url: str) -> bool:
    """True when the store URL carries credentials (``s3://KEY:SECRET@bucket/...``)."""
    return is_store_url(url) and _USERINFO.match(url) is not None


def redact_url(url: str) -> str:
    """``url`` with its credentials, if any, replaced by ``***``: safe to echo."""
    return _USERINFO.sub(r"\1***@", url) if isinstance(url, str) else url


def refuse_credentials(url: str) -> None:
    """``ValueError`` (echoing ``url`` redacted) when the store URL carries credentials: they would
    be echoed in messages and sent to the server as part of the path."""
    if credentials_in(url):
        raise ValueError(
            f"The store URL {redact_url(url)!r} carries credentials: give them in the "
            "environment instead (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3)"
        )
