"""One redaction layer for secrets: every value a secret reference resolves to is remembered here,
and every exception message, log record, run summary and stored error passes through ``redact``.

Resolving happens in the process that uses the secret (the driver, a source actor, a Ray task), and
each process remembers what it resolved; the driver also resolves what it ships to its workers, so
errors that come back from them are redacted where they are shown and stored.

Example::

    remember("s3cr3t-token")
    redact("401 for token s3cr3t-token")  # '401 for token ***'
"""
from __future__ import annotations

import logging
import threading
from typing import Any

MIN_LENGTH = 4  # shorter values would blank out ordinary words; such secrets are weak anyway
MASK = "***"

_lock = threading.Lock()
_values: set[str] = set()
_installed = False


def remember(value: str | None) -> None:
    """Add a resolved secret value to what ``redact`` removes (and install the log filter once)."""
    if not value or len(value) < MIN_LENGTH:
        return
    global _installed
    with _lock:
        _values.add(value)
        if not _installed:
            _install_log_redaction()
            _installed = True


def redact(text: str) -> str:
    """`text` with every remembered secret value replaced by ``***`` (longest first)."""
    if not _values or not text:
        return text
    for v in sorted(_values, key=len, reverse=True):
        if v in text:
            text = text.replace(v, MASK)
    return text


def redact_tree(node: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with secrets redacted in every string."""
    if not _values:
        return node
    if isinstance(node, str):
        return redact(node)
    if isinstance(node, dict):
        return {redact_tree(k): redact_tree(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [redact_tree(v) for v in node]
    return node


def _install_log_redaction() -> None:
    """Every log record of this process is formatted, then redacted, before any handler sees it."""
    factory = logging.getLogRecordFactory()

    def redacting_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is left to logging's own error path
            return record
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        return record

    logging.setLogRecordFactory(redacting_factory)
