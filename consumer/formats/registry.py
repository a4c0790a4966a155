"""The Confluent wire format (byte 0, a 4-byte big-endian schema id, the payload) via a Schema Registry.

Decoding is confluent-kafka's own deserializers (Avro, JSON Schema, Protobuf) over its
``SchemaRegistryClient``; this module only decides *when* the network may be used. The daemon's
intake runs on the event loop, so :meth:`SchemaRegistry.decode` never calls the registry: a schema
id it has not prepared yet raises :class:`SchemaPending`, and the intake holds that partition
while :meth:`SchemaRegistry.prepare` runs in a worker thread (fetch the schema, build the
deserializer, decode the first message once so every cache, references included, is warm).

- Registry unreachable, 5xx, 401/403, a timeout: :class:`RegistryUnavailable` (the caller retries,
  the event is held; never dead-lettered for that).
- 404 (unknown schema id): remembered for ``UNKNOWN_TTL_S``; such messages are ``invalid_event``
  ``unknown_schema``.
- A 404 on a schema's *reference* is the same: the id is not ready, it is remembered as unknown
  for ``UNKNOWN_TTL_S`` (``unknown_schema``), then fetched again.
- A payload the deserializer refuses (truncated, not matching its schema): ``undecodable``.

No network I/O on the loop, ever: both clients' HTTP is refused outside :meth:`prepare` (a
thread-local guard), so a decode that would need the registry (a cache the warm-up did not fill)
raises :class:`SchemaPending` without blocking and makes the id not ready; and :meth:`prepare`
returns only when its value then decodes offline, else it raises :class:`RegistryUnavailable` (the
intake retries with backoff). So release -> decode -> hold cannot spin.

Schema ids are cached for the life of the process (ids are immutable in a registry). Protobuf
needs a message class per schema id and message index (consumer.formats.protobuf); its schemas are
fetched in the registry's ``serialized`` format by a second client, whose cache holds only those.
An index that names no message of its (fetched) schema is ``undecodable`` on the loop, without a
hold or a class built. What input can multiply is bounded: the unknown ids and the message classes
expire (ExpiringMap), and fetches are serialised by one of ``LOCK_STRIPES`` locks per id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from consumer.errors import InvalidEvent
from consumer.formats.protobuf import build_decoder, message_indexes, message_name, serialized_file
from consumer.util.expiring import ExpiringMap

MAGIC = 0
HEADER_BYTES = 5
UNKNOWN_TTL_S = 60.0
MAX_UNKNOWN = 4096  # schema ids answered 404, remembered
MAX_MESSAGE_CLASSES = 1024  # protobuf (schema id, message index) classes kept
MESSAGE_CLASS_TTL_S = 3600.0
LOCK_STRIPES = 64
KINDS = {"AVRO": "avro", "JSON": "json-schema", "PROTOBUF": "protobuf"}


class SchemaPending(Exception):
    """The message needs a schema this process has not fetched yet (the intake holds its partition)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} not fetched yet")
        self.schema_id = schema_id


class RegistryUnavailable(Exception):
    """The registry could not answer (connection, timeout, 5xx, auth): retry later."""


class _Missing(Exception):
    """The registry answered 404 for a part of a schema (a reference): the id is unknown for a while."""


class _Offline(Exception):
    """A registry request made outside prepare() (on the loop): refused before any I/O."""


_online = threading.local()  # .active: this thread is inside prepare(); .refused: the guard fired


def _guard(client: Any) -> None:
    """Refuse the client's HTTP unless the calling thread is inside prepare()."""
    rest = client._rest_client
    send = rest.send_request

    def send_request(*args: Any, **kwargs: Any) -> Any:
        if not getattr(_online, "active", False):
            _online.refused = True
            raise _Offline("schema registry request on the event loop")
        return send(*args, **kwargs)

    rest.send_request = send_request


@contextmanager
def _network() -> Iterator[None]:
    _online.active = True
    try:
        yield
    finally:
        _online.active = False


def is_wire_format(value: bytes) -> bool:
    """True when a value starts like the Confluent wire format (magic byte 0 and room for an id)."""
    return len(value) > HEADER_BYTES and value[0] == MAGIC


def schema_id_of(value: bytes) -> int:
    """The schema id of a wire-format value."""
    return int.from_bytes(value[1:HEADER_BYTES], "big")


class _SharedMap(ExpiringMap[Any, Any]):
    """An ExpiringMap the loop reads while worker threads write: each O(1) operation under a lock."""

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float]) -> None:
        super().__init__(max_entries, ttl_s, clock)
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The live value of `key`, or None."""
        with self._lock:
            return super().get(key)

    def set(self, key: Any, value: Any, ttl_s: float | None = None) -> None:
        """Keep `value` (evicting expired, then least recently used entries)."""
        with self._lock:
            super().set(key, value, ttl_s)

    def pop(self, key: Any) -> Any:
        """Forget `key`."""
        with self._lock:
            return super().pop(key)


class SchemaRegistry:
    """Schema ids -> confluent-kafka deserializers, fetched off the loop, used on it without I/O."""

    def __init__(
        self,
        url: str,
        user_info: str | None = None,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": url, "timeout": timeout_s, "max.retries": 0}
        if user_info:
            conf["basic.auth.user.info"] = user_info
        self.client = SchemaRegistryClient(conf)
        _guard(self.client)
        self._conf = conf
        self._protobuf_client: Any = None
        # (schema id, message index) -> decoder, and schema id -> why unknown: read on the loop
        self._protobuf = _SharedMap(MAX_MESSAGE_CLASSES, MESSAGE_CLASS_TTL_S, clock)
        self._files: dict[int, Any] = {}  # protobuf schema id -> its FileDescriptorProto
        self._ready: dict[int, tuple[str, Callable[[bytes], Any]]] = {}
        self._unknown = _SharedMap(MAX_UNKNOWN, UNKNOWN_TTL_S, clock)
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]  # one fetch per id at a time

    def decode(self, value: bytes) -> tuple[Any, str]:
        """Decode a wire-format value with a prepared schema: (object, format label); never blocks."""
        schema_id = schema_id_of(value)
        ready = self._ready.get(schema_id)
        if ready is None:
            unknown = self._unknown.get(schema_id)
            if unknown is not None:
                raise InvalidEvent("unknown_schema", unknown)
            raise SchemaPending(schema_id)
        label, deserialize = ready
        _online.refused = False
        try:
            return _decode(deserialize, value, schema_id, label), label
        except (InvalidEvent, SchemaPending):
            if getattr(_online, "refused", False):  # it needed the network: not ready after all
                self._ready.pop(schema_id, None)
                raise SchemaPending(schema_id) from None
            raise

    def prepare(self, schema_id: int, value: bytes) -> None:
        """Fetch a schema and build its deserializer (blocking: run it in a worker thread)."""
        with self._locks[schema_id % LOCK_STRIPES]:
            if not self._needs(schema_id, value):
                return
            with _network():
                self._prepare(schema_id, value)
            if not is_wire_format(value) or schema_id_of(value) != schema_id:
                return  # nothing of this id's to decode offline
            try:
                self.decode(value)  # offline, as the loop will: a cache the warm-up left cold shows here
            except SchemaPending:
                raise RegistryUnavailable(f"schema id {schema_id} still needs the registry") from None
            except InvalidEvent:
                pass  # this message is bad (or the id unknown); decode() says so on the loop

    def _needs(self, schema_id: int, value: bytes) -> bool:
        if schema_id in self._unknown:
            return False
        ready = self._ready.get(schema_id)
        if ready is None:
            return True
        if ready[0] == "protobuf":
            try:
                return (schema_id, message_indexes(value)) not in self._protobuf
            except ValueError:
                return False
        return False

    def _prepare(self, schema_id: int, value: bytes) -> None:
        from confluent_kafka.schema_registry.error import SchemaRegistryError
        from confluent_kafka.serialization import SerializationError

        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                self._unknown.set(schema_id, f"schema id {schema_id} is not in the schema registry")
                return
            raise RegistryUnavailable(f"HTTP {exc.http_status_code}: {exc.error_message}") from None
        except Exception as exc:  # httpx transport errors, timeouts, DNS: all mean "try again"
            raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
        label = KINDS.get(str(schema.schema_type or "AVRO").upper())
        if label == "protobuf":
            self._prepare_protobuf(schema_id, value)
            return
        deserialize = self._deserializer(label) if label else None
        if label is None or deserialize is None:
            self._ready[schema_id] = (str(schema.schema_type), _unsupported(schema_id, schema.schema_type))
            return
        try:
            deserialize(value)  # warms the parsed-schema caches (and fetches references) off the loop
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise RegistryUnavailable(f"HTTP {exc.http_status_code}: {exc.error_message}") from None
            detail = f"schema id {schema_id}: a reference is missing ({exc.error_message})"
            self._unknown.set(schema_id, detail)  # not ready: fetched again when this expires
            return
        except SerializationError:
            pass  # this message is bad; decode() says so on the loop
        except Exception as exc:
            if _is_transport(exc):
                raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._ready[schema_id] = (label, deserialize)

    def _prepare_protobuf(self, schema_id: int, value: bytes) -> None:
        """Build the class of this value's message index (once per id and index); blocking."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        if self._protobuf_client is None:
            self._protobuf_client = SchemaRegistryClient(self._conf)
            _guard(self._protobuf_client)
        try:
            if schema_id not in self._files:
                self._files[schema_id] = self._protobuf_call(
                    schema_id, lambda: serialized_file(self._protobuf_client, schema_id)
                )
            file = self._files[schema_id]
            try:
                indexes = message_indexes(value)
                if not callable(file):
                    message_name(file, indexes)
            except ValueError:
                indexes = None  # this message is bad: decode() says so; the id is ready for the others
            if indexes is not None and not callable(file) and (schema_id, indexes) not in self._protobuf:
                self._protobuf_class(schema_id, indexes, value)
        except _Missing as missing:
            self._ready.pop(schema_id, None)
            self._unknown.set(schema_id, str(missing))  # not ready: fetched again when this expires
            return
        self._ready[schema_id] = ("protobuf", self._protobuf_dispatch(schema_id))

    def _protobuf_class(self, schema_id: int, indexes: tuple[int, ...], value: bytes) -> None:
        """Build and warm the decoder of one message index of a schema (blocking)."""
        decode = self._protobuf_call(
            schema_id, lambda: build_decoder(self._protobuf_client, schema_id, indexes, _no_subject)
        )
        try:
            decode(value)  # warms the deserializer's parsed-schema cache off the loop
        except Exception as exc:
            if _is_transport(exc):
                raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._protobuf.set((schema_id, indexes), decode)

    def _protobuf_call(self, schema_id: int, build: Callable[[], Any]) -> Any:
        """Run a blocking protobuf schema step; registry trouble as RegistryUnavailable, else a refusal."""
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return build()
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise RegistryUnavailable(f"HTTP {exc.http_status_code}: {exc.error_message}") from None
            raise _Missing(f"schema id {schema_id}: a reference is missing ({exc.error_message})") from None
        except Exception as exc:
            if _is_transport(exc):
                raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
            return _refuse(f"protobuf schema id {schema_id}: {_one_line(exc)}")

    def _protobuf_dispatch(self, schema_id: int) -> Callable[[bytes], Any]:
        def decode(value: bytes) -> Any:
            try:
                indexes = message_indexes(value)
                file = self._files.get(schema_id)
                if file is not None and not callable(file):
                    message_name(file, indexes)  # an index naming no message: refused, no hold, no class
            except ValueError as exc:
                raise InvalidEvent(
                    "undecodable", f"protobuf payload of schema id {schema_id}: {exc}"
                ) from None
            if callable(file):  # the schema itself could not be built
                return file(value)
            message = self._protobuf.get((schema_id, indexes))
            if message is None:  # a message type of this schema not seen yet: build its class off the loop
                raise SchemaPending(schema_id)
            return message(value)

        return decode

    def _deserializer(self, label: str) -> Callable[[bytes], Any] | None:
        if label == "avro":
            from confluent_kafka.schema_registry.avro import AvroDeserializer

            return AvroDeserializer(self.client)  # type: ignore[no-any-return]
        if label == "json-schema":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer

            return JSONDeserializer(  # type: ignore[no-any-return]
                None, schema_registry_client=self.client, conf={"subject.name.strategy": _no_subject}
            )
        return None


def _decode(deserialize: Callable[[bytes], Any], value: bytes, schema_id: int, label: str) -> Any:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    try:
        return deserialize(value)
    except SchemaRegistryError as exc:  # a reference not fetched yet: hold like any other fetch
        if exc.http_status_code == 404:
            raise InvalidEvent("unknown_schema", f"schema id {schema_id}: {exc.error_message}") from None
        raise SchemaPending(schema_id) from None
    except (InvalidEvent, SchemaPending):
        raise
    except Exception as exc:
        if _is_transport(exc):
            raise SchemaPending(schema_id) from None
        raise InvalidEvent(
            "undecodable", f"{label} payload of schema id {schema_id}: {_one_line(exc)}"
        ) from None


def _no_subject(ctx: object, record_name: object) -> None:
    """Subject strategy for decoding by schema id alone (no subject: no latest-version look-ups)."""
    return None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _refuse(detail: str) -> Callable[[bytes], Any]:
    def refuse(value: bytes) -> Any:
        raise InvalidEvent("undecodable", detail)

    return refuse


def _unsupported(schema_id: int, schema_type: object) -> Callable[[bytes], Any]:
    def refuse(value: bytes) -> Any:
        raise InvalidEvent(
            "undecodable", f"schema id {schema_id} is {schema_type}, a type this consumer does not read"
        )

    return refuse


def _is_transport(exc: Exception) -> bool:
    """True for httpx's network errors (connection refused, reset, timeout), whichever httpx is installed."""
    from confluent_kafka.schema_registry.common._httpx_compat import httpx

    return isinstance(exc, httpx.TransportError)
