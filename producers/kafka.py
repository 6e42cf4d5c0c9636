"""The one way records enter Kafka: an idempotent producer keyed by stream id.

``acks=all`` + ``enable.idempotence`` means a retried send never duplicates or reorders a record
within a stream. ``append`` waits for the broker's acknowledgement and returns the record's
partition and offset (the offset is the record's sequence number in its stream); ``append_async``
does the same for a caller on an event loop, without taking a thread while it waits.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Producer

from astraforge.config import Settings
from astraforge.errors import DeliveryFailed
from astraforge.kafka import client_config, unavailable
from astraforge.schemas import Codec, Envelope, default_codec

LOG = logging.getLogger(__name__)
POLL_S = 0.05  # how long one poll of a waiting caller waits for the next delivery report


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a record landed."""

    topic: str
    partition: int
    offset: int


def _report_into(results: list, index: int, reported: threading.Condition):
    """A delivery callback that stores its record's outcome in ``results[index]`` and wakes the
    callers waiting on ``reported`` (it runs in whichever thread polled)."""

    def report(err, msg) -> None:
        results[index] = err if err else Appended(msg.topic(), msg.partition(), msg.offset())
        with reported:
            reported.notify_all()

    return report


def dead_letter_headers(reason: str, consumer: str, topic: str, partition: int, offset: int) -> dict[str, bytes]:
    """Why a record was set aside, by whom, and where it came from (the dead-letter topic's headers)."""
    return {
        "reason": reason.encode(),
        "source.topic": topic.encode(),
        "source.partition": str(partition).encode(),
        "source.offset": str(offset).encode(),
        "consumer": consumer.encode(),
    }


class EventProducer:
    """Appends envelopes to the commands or events topic (chosen by the record type)."""

    def __init__(self, settings: Settings, codec: Codec | None = None, **overrides: str | int) -> None:
        self.settings = settings
        self.codec = codec or default_codec()
        config = client_config(
            settings,
            **{
                "acks": "all",
                "enable.idempotence": True,
                "partitioner": "consistent_random",  # CRC32(stream id): see astraforge.kafka.partition_for
                "linger.ms": 0,  # latency first; bulk writers (bench, replays) pass their own
                "compression.type": "zstd",
                "message.timeout.ms": int(settings.kafka_timeout_s * 2000),
                **overrides,
            },
        )
        self._producer = Producer(config)
        self._topics: dict[str, str] = {}  # record type -> its topic
        # one caller polls at a time; the others wait to be told a report came (a poll that served
        # another caller's report kept it waiting for the next event, up to the poll's timeout)
        self._polling = threading.Lock()
        self._reported = threading.Condition()
        self._report_within_s = int(config["message.timeout.ms"]) / 1000 + settings.kafka_timeout_s
        self._poller: threading.Thread | None = None  # serves delivery reports for ``append_async``
        self._closing = threading.Event()
        try:
            self._producer.list_topics(settings.events_topic, timeout=settings.kafka_timeout_s)
        except KafkaException as e:
            raise unavailable(settings, e) from e

    def topic_for(self, envelope: Envelope) -> str:
        topic = self._topics.get(envelope.type)
        if topic is None:  # first of its type (an unknown type raises ValidationError here)
            kind = self.codec.topic_kind(envelope.type)
            topic = self._topics[envelope.type] = (
                self.settings.commands_topic if kind == "commands" else self.settings.events_topic
            )
        return topic

    def send(self, envelope: Envelope, on_delivery=None, timestamp: int | None = None) -> None:
        """Queue one record without waiting (call ``flush`` or ``append`` to wait). ``timestamp`` (ms) is
        the Kafka record's, not the envelope's ``occurred_at`` (a fenced writer's: see ``topics.FENCE``)."""
        value = self.codec.encode(envelope)
        self._produce(self.topic_for(envelope), envelope.stream_id.encode(), value, on_delivery, timestamp=timestamp)

    def send_raw(self, topic: str, key: bytes | None, value: bytes, headers: dict | None = None) -> None:
        """Queue bytes as they are (dead letters, tests of malformed input)."""
        self._produce(topic, key, value, None, headers)

    def _produce(self, topic, key, value, on_delivery, headers=None, timestamp: int | None = None) -> None:
        while not self._try_produce(topic, key, value, on_delivery, headers, timestamp):
            self._producer.poll(0.05)  # local queue full: serve delivery reports, then retry

    def _try_produce(self, topic, key, value, on_delivery, headers=None, timestamp: int | None = None) -> bool:
        """Queue one record; ``False`` when librdkafka's local queue is full (nothing queued)."""
        # keyword arguments only when given: passing None for each cost a third of produce() itself
        extra = {}
        if on_delivery is not None:
            extra["on_delivery"] = on_delivery
        if headers is not None:
            extra["headers"] = headers
        if timestamp is not None:
            extra["timestamp"] = timestamp
        try:
            self._producer.produce(topic, value, key, **extra)
        except BufferError:
            return False
        return True

    def append_raw(self, topic: str, key: bytes | None, value: bytes, headers: dict | None = None) -> Appended:
        """Send bytes as they are and wait for *their* acknowledgement (not the whole queue's)."""
        results: list[Appended | KafkaError | None] = [None]
        self._produce(topic, key, value, _report_into(results, 0, self._reported), headers)
        return self._wait(results)[0]

    def dead_letter(self, msg, reason: str, consumer: str) -> None:
        """Copy an unusable record to the dead-letter topic with why and where it came from, and
        wait for the ack (the caller commits past the record only after this returns)."""
        where = (msg.topic(), msg.partition(), msg.offset())
        self.append_raw(
            self.settings.deadletter_topic, msg.key(), msg.value() or b"", dead_letter_headers(reason, consumer, *where)
        )

    def append(self, envelope: Envelope) -> Appended:
        """Send one record and wait for the broker's acknowledgement."""
        return self.append_many([envelope])[0]

    def append_many(self, envelopes: Iterable[Envelope], timestamp: int | None = None) -> list[Appended]:
        """Send records (in order) and wait for *their* acknowledgements; raises ``DeliveryFailed``.

        Waits on this call's own delivery reports, never on the producer's whole queue: another
        caller's backlog (a slow or failing topic) neither delays nor fails this call.
        """
        encoded = self._encode_all(envelopes)
        results: list[Appended | KafkaError | None] = [None] * len(encoded)
        for i, (topic, key, value) in enumerate(encoded):
            self._produce(topic, key, value, _report_into(results, i, self._reported), timestamp=timestamp)
        return self._wait(results)

    def _encode_all(self, envelopes: Iterable[Envelope]) -> list[tuple[str, bytes, bytes]]:
        """``(topic, key, value)`` of every record, before any is sent: one that cannot be encoded
        fails the whole call with nothing of it appended (sent as they were encoded, the records
        before it went out while the caller was told the append failed)."""
        return [(self.topic_for(e), e.stream_id.encode(), self.codec.encode(e)) for e in envelopes]

    async def append_async(self, envelopes: Iterable[Envelope]) -> list[Appended]:
        """``append_many`` for a caller on an event loop: the records are queued from the loop (a
        produce call does not block) and the loop is woken when *their* reports came, by the
        producer's report thread; no thread waits for each call. Raises ``DeliveryFailed``."""
        loop = asyncio.get_running_loop()
        reported = loop.create_future()
        encoded = self._encode_all(envelopes)
        # every slot exists before the first send: a report served meanwhile must not see the
        # records sent so far as all of them and resolve the call early
        results: list[Appended | KafkaError | None] = [None] * len(encoded)

        def resolve() -> None:
            if not reported.done():
                reported.set_result(None)

        def report_into(index: int):
            def report(err, msg) -> None:
                results[index] = err if err else Appended(msg.topic(), msg.partition(), msg.offset())
                if all(r is not None for r in results):
                    with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits
                        loop.call_soon_threadsafe(resolve)
                with self._reported:
                    self._reported.notify_all()

            return report

        for i, (topic, key, value) in enumerate(encoded):
            while not self._try_produce(topic, key, value, report_into(i)):
                self._serve_reports()  # local queue full: the report thread drains it; the loop goes on
                await asyncio.sleep(POLL_S)
        if not results:
            return []
        self._serve_reports()
        try:
            await asyncio.wait_for(reported, self._report_within_s)
        except TimeoutError:
            left = sum(r is None for r in results)
            raise DeliveryFailed(f"{left} of {len(results)} records got no delivery report (is Kafka up?)") from None
        failures = [r for r in results if not isinstance(r, Appended)]
        if failures:
            raise DeliveryFailed(f"{len(failures)} of {len(results)} records not acknowledged: {failures[0]}")
        return results  # type: ignore[return-value]

    def _serve_reports(self) -> None:
        """Start the thread that serves delivery reports for ``append_async`` (once; it ends at ``close``)."""
        if self._poller is None:
            with self._reported:
                if self._poller is None:
                    self._poller = threading.Thread(target=self._poll_reports, name="producer-reports", daemon=True)
                    self._poller.start()

    def _poll_reports(self) -> None:
        """Serve delivery reports until ``close``, sharing the polling with ``_wait`` callers (one
        polls at a time; the others are told when a poll has served reports)."""
        while not self._closing.is_set():
            if self._polling.acquire(blocking=False):
                try:
                    self._producer.poll(POLL_S)
                except Exception:  # a callback that raised: the thread must outlive it (others wait on it)
                    LOG.exception("a delivery report callback failed")
                finally:
                    self._polling.release()
                with self._reported:
                    self._reported.notify_all()
            else:
                with self._reported:
                    self._reported.wait(POLL_S)

    def _wait(self, results: list[Appended | KafkaError | None]) -> list[Appended]:
        """Poll until every slot holds its report. Each record gets one within ``message.timeout.ms``
        (librdkafka's guarantee); the deadline past it only guards against a report that never comes."""
        deadline = time.monotonic() + self._report_within_s
        while any(r is None for r in results):  # a report fills its slot, in whichever thread polls
            if time.monotonic() > deadline:
                left = sum(r is None for r in results)
                raise DeliveryFailed(f"{left} of {len(results)} records got no delivery report (is Kafka up?)")
            if self._polling.acquire(blocking=False):
                try:
                    self._producer.poll(POLL_S)
                finally:
                    self._polling.release()
                with self._reported:  # the next poller may be waiting for this one to finish
                    self._reported.notify_all()
            else:
                with self._reported:
                    if any(r is None for r in results):
                        self._reported.wait(POLL_S)
        failures = [r for r in results if not isinstance(r, Appended)]
        if failures:
            raise DeliveryFailed(f"{len(failures)} of {len(results)} records not acknowledged: {failures[0]}")
        return results  # type: ignore[return-value]

    def poll(self, timeout: float = 0) -> int:
        """Serve delivery reports, unless a caller of ``append_many`` is polling (it serves them)."""
        if not self._polling.acquire(blocking=False):
            return 0
        try:
            return self._producer.poll(timeout)
        finally:
            self._polling.release()

    def flush(self, timeout: float | None = None) -> None:
        remaining = self._producer.flush(timeout if timeout is not None else self.settings.kafka_timeout_s * 3)
        if remaining:
            raise DeliveryFailed(f"{remaining} records still unacknowledged (is Kafka up?)")

    def close(self) -> None:
        self._closing.set()
        if self._poller is not None:
            self._poller.join()
        self._producer.flush(self.settings.kafka_timeout_s)
