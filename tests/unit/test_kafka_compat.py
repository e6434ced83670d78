"""Pins of the kafka-python private parts eai_ray.ingestion.cdc.kafka_compat relies on: an upgrade
that moves one fails here (read the module's docstring for what each one is for)."""
import inspect
import re

import kafka
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import Fetcher
from kafka.producer.sender import Sender
from kafka.producer.transaction_manager import TransactionManager

from eai_ray.ingestion.cdc import kafka_compat


def test_fetcher_partition_records_takes_aborted_transactions():
    params = inspect.signature(Fetcher.PartitionRecords.__init__).parameters
    assert list(params)[1:4] == ["fetch_offset", "tp", "records"] and "aborted_transactions" in params
    assert re.search(r"self\._fetcher = Fetcher\(", inspect.getsource(KafkaConsumer.__init__))


def test_producer_transactions_can_be_ended_with_a_deadline():
    init = inspect.getsource(KafkaProducer.__init__)
    assert "self._transaction_manager" in init and "self._sender" in init
    assert callable(TransactionManager.begin_commit) and callable(TransactionManager.begin_abort)
    assert callable(Sender.wakeup)


def test_clients_expose_their_connections():
    assert re.search(r"self\._client = ", inspect.getsource(KafkaConsumer.__init__))
    assert re.search(r"self\._client = ", inspect.getsource(Sender.__init__))
    assert "self._conns" in inspect.getsource(kafka.net.manager)
    assert "self._manager" in inspect.getsource(kafka.net.compat)


class _Aborted:
    def __init__(self, first_offset):
        self.first_offset = first_offset


def test_the_patch_drops_only_aborted_transactions_before_the_fetch_position():
    seen = {}

    class FakeFetcher:
        def PartitionRecords(self, fetch_offset, tp, recs, **kw):  # noqa: N802 - kafka-python's name
            seen.update(kw)

    class FakeConsumer:
        _fetcher = FakeFetcher()

    c = FakeConsumer()
    assert kafka_compat.drop_stale_aborted_transactions(c)
    c._fetcher.PartitionRecords(100, "tp", [], aborted_transactions=[_Aborted(5), _Aborted(100), _Aborted(150)])
    assert [t.first_offset for t in seen["aborted_transactions"]] == [100, 150]
    assert kafka_compat.drop_stale_aborted_transactions(object()) is False  # no hook: nothing changes
    assert kafka_compat.connection_ids(object()) is None
