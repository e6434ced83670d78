"""One error tree for eai-ray.

Every error says whether a retry can help (``transient``) and carries its
context as fields, so retry policies decide by type, never by parsing
message text. User errors (bad config, bad input) map to exit code 2,
pipeline failures to exit code 1.
"""
from __future__ import annotations

from typing import Any


class EaiError(Exception):
    """Root of every error eai-ray raises on purpose."""

    transient: bool = False
    exit_code: int = 1

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        from eai_ray.redact import redact

        return redact(self.message)

    def to_dict(self) -> dict[str, Any]:
        from eai_ray.redact import redact

        return {
            "type": type(self).__name__,
            "message": redact(self.message),
            "transient": self.transient,
            **{k: redact(str(v)) for k, v in self.context.items()},
        }

    def __reduce__(self):  # keep fields across Ray's pickling of task errors
        return (_rebuild, (type(self), self.message, self.context))


def _rebuild(cls, message, context):
    err = cls.__new__(cls)
    EaiError.__init__(err, message, **context)
    return err


class TransientError(EaiError):
    """A retry with backoff can help (network timeout, 429, 5xx, lost connection)."""

    transient = True


class TerminalError(EaiError):
    """Retrying the same thing gives the same failure."""


class UserError(TerminalError):
    """Bad input from the user: config, arguments, files. Exit code 2, no traceback."""

    exit_code = 2


class ConfigError(UserError):
    """A pipeline or settings file is invalid. Names the file, the field and the fix."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 expected: str | None = None) -> None:
        parts = []
        if file:
            parts.append(str(file))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        full = f"{prefix}: {message}" if prefix else message
        if expected:
            full += f" (expected {expected})"
        super().__init__(full, file=file, field=field, expected=expected)


class SecretError(ConfigError):
    """A referenced secret (${ENV} or file) cannot be resolved."""


class SourceError(EaiError):
    """A source failed. Subclasses say whether a retry can help."""


class SourceUnavailable(SourceError, TransientError):
    """Connection refused or timed out, 5xx, broken connection."""


class RateLimited(SourceUnavailable):
    """The source answered 429; ``retry_after`` seconds were asked for."""


class AuthenticationFailed(SourceError, UserError):
    """Wrong password, token or key: retrying cannot help."""


class SourceNotFound(SourceError, UserError):
    """The table, file or endpoint does not exist."""


class SchemaError(TerminalError):
    """Schema problems found while writing a table."""


class IncompatibleSchemaChange(SchemaError):
    """A column changed type in a way that cannot be widened. Stops that table only."""


class QualityGateFailed(TerminalError):
    """A quality rule with action 'fail' was violated."""


class SqlValidationError(UserError):
    """Generated or user SQL did not pass validation (not one read-only SELECT, unknown table...)."""


class TableNotFound(UserError):
    """The named table does not exist in the catalog."""


class CommitConflict(TransientError):
    """Another writer committed first; retry the commit on the new table state."""


class ModelError(EaiError):
    """An embedding or language model failed. Subclasses say whether a retry can help."""


class ModelNotAvailable(ModelError, UserError):
    """A model or its optional dependency is not installed or not configured (install hint in the message)."""


class LLMError(ModelError):
    """A language-model backend failed (bad answer, refused request)."""


class LLMUnavailable(LLMError, TransientError):
    """The LLM endpoint cannot be reached, answered 5xx or 429."""


class LLMTimeout(LLMUnavailable):
    """The completion did not finish within its timeout."""


class LLMAuthError(LLMError, UserError):
    """The LLM endpoint rejected the key (401/403): retrying cannot help."""


class CdcError(EaiError):
    """Change data capture failed. Subclasses say whether a retry can help."""


class SlotLost(CdcError, TerminalError):
    """The replication slot or binlog position to resume from is gone (dropped, invalidated, purged).

    Resuming would skip changes. The remedy is an incremental re-snapshot of ``tables`` only
    (the tables this slot fed); ``CdcConsumer`` applies it when ``cdc.on_slot_lost`` is ``resnapshot``.
    """


class CdcSetupError(CdcError, UserError):
    """The source cannot be captured as configured (wal_level, no key, replica identity, binlog off)."""


class UndecodableEvent(CdcError, TerminalError):
    """A change message could not be decoded; it is quarantined with this reason and the stream goes on."""


def is_transient(exc: BaseException) -> bool:
    """True when a retry may help: our transient errors and common network failures."""
    if isinstance(exc, EaiError):
        return exc.transient
    return isinstance(exc, (ConnectionError, TimeoutError))
