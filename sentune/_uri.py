"""Storage URIs as they may be shown: credentials in a URI (``s3://key:secret@bucket/...``, or
``?access_key=...&secret_key=...`` as pyarrow takes them) never reach a file, the job metadata or the
console. Standard library only."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["redact", "redact_text", "has_credentials"]

_MASK = "***"
_SECRET_KEY = re.compile(r"(key|secret|token|password|passwd|credential|signature|sig)", re.IGNORECASE)
_URI_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(uri: str) -> str:
    """``uri`` with its user info and any secret-looking query values masked; a plain path unchanged."""
    text = str(uri)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return re.sub(r"//[^/@]*@", f"//{_MASK}@", text)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{_MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, _MASK if _SECRET_KEY.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return text  # nothing to mask: the URI as given (urlunsplit would turn sqlite:///x.db into sqlite:/x.db)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def has_credentials(uri: str) -> bool:
    return redact(uri) != str(uri)


def redact_text(text: str) -> str:
    """Every URI inside ``text`` redacted (for messages that quote one)."""
    return _URI_IN_TEXT.sub(lambda m: redact(m.group(0)), str(text))
