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
- A payload the deserializer refuses (truncated, not matching its schema): ``undecodable``.

Schema ids are cached for the life of the process (ids are immutable in a registry). Protobuf
needs a message class per schema id and message index (consumer.formats.protobuf); its schemas are
fetched in the registry's ``serialized`` format by a second client, whose cache holds only those.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from consumer.errors import InvalidEvent
from consumer.formats.protobuf import build_decoder, message_indexes

MAGIC = 0
HEADER_BYTES = 5
UNKNOWN_TTL_S = 60.0
KINDS = {"AVRO": "avro", "JSON": "json-schema", "PROTOBUF": "protobuf"}


class SchemaPending(Exception):
    """The message needs a schema this process has not fetched yet (the intake holds its partition)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"schema id {schema_id} not fetched yet")
        self.schema_id = schema_id


class RegistryUnavailable(Exception):
    """The registry could not answer (connection, timeout, 5xx, auth): retry later."""


def is_wire_format(value: bytes) -> bool:
    """True when a value starts like the Confluent wire format (magic byte 0 and room for an id)."""
    return len(value) > HEADER_BYTES and value[0] == MAGIC


def schema_id_of(value: bytes) -> int:
    """The schema id of a wire-format value."""
    return int.from_bytes(value[1:HEADER_BYTES], "big")


class SchemaRegistry:
    """Schema ids -> confluent-kafka deserializers, fetched off the loop, used on it without I/O."""

    def __init__(self, url: str, user_info: str | None = None, timeout_s: float = 5.0) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf: dict[str, Any] = {"url": url, "timeout": timeout_s, "max.retries": 0}
        if user_info:
            conf["basic.auth.user.info"] = user_info
        self.client = SchemaRegistryClient(conf)
        self._conf = conf
        self._protobuf_client: Any = None
        self._protobuf: dict[tuple[int, tuple[int, ...]], Callable[[bytes], Any]] = {}
        self._ready: dict[int, tuple[str, Callable[[bytes], Any]]] = {}
        self._unknown: dict[int, float] = {}
        self._fetching: dict[int, threading.Lock] = {}  # one fetch per id when partitions wait on the same

    def decode(self, value: bytes) -> tuple[Any, str]:
        """Decode a wire-format value with a prepared schema: (object, format label); never blocks."""
        schema_id = schema_id_of(value)
        ready = self._ready.get(schema_id)
        if ready is None:
            until = self._unknown.get(schema_id)
            if until is not None and until > time.monotonic():
                raise InvalidEvent("unknown_schema", f"schema id {schema_id} is not in the schema registry")
            raise SchemaPending(schema_id)
        label, deserialize = ready
        return _decode(deserialize, value, schema_id, label), label

    def prepare(self, schema_id: int, value: bytes) -> None:
        """Fetch a schema and build its deserializer (blocking: run it in a worker thread)."""
        with self._fetching.setdefault(schema_id, threading.Lock()):
            if self._needs(schema_id, value):
                self._prepare(schema_id, value)

    def _needs(self, schema_id: int, value: bytes) -> bool:
        until = self._unknown.get(schema_id)
        if until is not None and until > time.monotonic():
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
                self._unknown[schema_id] = time.monotonic() + UNKNOWN_TTL_S
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
        except SerializationError:
            pass  # this message is bad; decode() says so on the loop
        except Exception as exc:
            if _is_transport(exc):
                raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._ready[schema_id] = (label, deserialize)

    def _prepare_protobuf(self, schema_id: int, value: bytes) -> None:
        """Build the class of this value's message index (once per id and index); blocking."""
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        if self._protobuf_client is None:
            self._protobuf_client = SchemaRegistryClient(self._conf)
        try:
            indexes = message_indexes(value)
        except ValueError:
            indexes = None  # this message is bad: decode() says so; the id is ready for the others
        if indexes is not None and (schema_id, indexes) not in self._protobuf:
            try:
                decode = build_decoder(self._protobuf_client, schema_id, indexes, _no_subject)
            except SchemaRegistryError as exc:
                if exc.http_status_code != 404:
                    raise RegistryUnavailable(f"HTTP {exc.http_status_code}: {exc.error_message}") from None
                decode = _refuse(f"schema id {schema_id}: a reference is missing ({exc.error_message})")
            except Exception as exc:
                if _is_transport(exc):
                    raise RegistryUnavailable(f"{type(exc).__name__}: {exc}") from None
                decode = _refuse(f"protobuf schema id {schema_id}, message {list(indexes)}: {_one_line(exc)}")
            self._protobuf[(schema_id, indexes)] = decode
        self._ready[schema_id] = ("protobuf", self._protobuf_dispatch(schema_id))

    def _protobuf_dispatch(self, schema_id: int) -> Callable[[bytes], Any]:
        def decode(value: bytes) -> Any:
            try:
                indexes = message_indexes(value)
            except ValueError as exc:
                raise InvalidEvent(
                    "undecodable", f"protobuf payload of schema id {schema_id}: {exc}"
                ) from None
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
