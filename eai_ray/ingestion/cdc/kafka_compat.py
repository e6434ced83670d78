"""The one place where eai-ray reaches into kafka-python's private parts, each use pinned by
``tests/unit/test_kafka_compat.py`` so that an upgrade which moves them fails there, loudly,
instead of silently changing what the CDC transport does.

- ``drop_stale_aborted_transactions``: a ``read_committed`` consumer that keeps reading after an
  aborted transaction. A fetch response lists the aborted transactions of the fetched range;
  kafka-python skips every later batch of such a producer until it meets that transaction's abort
  marker in the same response. noida-db 0.2.3 lists each aborted transaction in every later
  response too, long after its marker, so kafka-python dropped all later records of the (same)
  transactional producer. Entries that begin before the fetch position are dropped here (through
  the consumer's ``_fetcher.PartitionRecords``).
- ``end_transaction``: commit/abort with a deadline. kafka-python waits for the broker's answer
  without one, and an EndTxn in flight while the broker restarts is never answered (through the
  producer's ``_transaction_manager`` and ``_sender``).
- ``connection_ids``: identities of a client's broker connections, to notice a reconnect (through
  ``_client._manager._conns``).

Each falls back to the public behaviour when the private part is missing.
"""
from __future__ import annotations

from typing import Any


def drop_stale_aborted_transactions(consumer: Any) -> bool:
    """Patch this consumer (only) so that aborted transactions listed before the fetch position are
    ignored; False when kafka-python has no such hook (then nothing changes)."""
    fetcher = getattr(consumer, "_fetcher", None)
    base = getattr(fetcher, "PartitionRecords", None)
    if fetcher is None or base is None:
        return False

    def records(fetch_offset, tp, recs, **kw):
        aborted = kw.get("aborted_transactions")
        if aborted:
            kw["aborted_transactions"] = [t for t in aborted if t.first_offset >= fetch_offset]
        return base(fetch_offset, tp, recs, **kw)

    fetcher.PartitionRecords = records  # an instance attribute: this consumer only
    return True


def end_transaction(producer: Any, *, commit: bool, timeout_s: float) -> None:
    """commit_transaction()/abort_transaction(), raising KafkaTimeoutError after `timeout_s`."""
    from kafka.errors import KafkaTimeoutError

    tm, sender = getattr(producer, "_transaction_manager", None), getattr(producer, "_sender", None)
    if tm is None or sender is None:  # another client: its own calls
        producer.commit_transaction() if commit else producer.abort_transaction()
        return
    result = tm.begin_commit() if commit else tm.begin_abort()
    sender.wakeup()
    if not result.wait(timeout_ms=int(timeout_s * 1000)):
        raise KafkaTimeoutError(f"kafka: no answer to the transaction's {'commit' if commit else 'abort'} "
                                f"within {timeout_s:.0f} s")


def connection_ids(client: Any) -> frozenset | None:
    """Identities of a producer's or consumer's broker connections (a reconnect makes new ones);
    None if unknown."""
    try:
        inner = client._sender._client if hasattr(client, "_sender") else client._client
        return frozenset((k, id(v)) for k, v in inner._manager._conns.items())
    except AttributeError:
        return None
