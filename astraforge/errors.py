"""One root for every error AstraForge raises; each subclass also inherits the matching builtin.

Adapters translate library errors (confluent-kafka, psycopg, docker) into these with
``raise ... from e`` so callers never need to know which client library failed.
"""


class AstraForgeError(Exception):
    """Root of all AstraForge errors."""


class ConfigError(AstraForgeError, ValueError):
    """The configuration is unusable (e.g. a default secret outside development)."""


class KafkaUnavailable(AstraForgeError, ConnectionError):
    """The Kafka cluster did not answer in time."""


class DatabaseUnavailable(AstraForgeError, ConnectionError):
    """PostgreSQL did not answer in time."""


class DecodeError(AstraForgeError, ValueError):
    """A record's bytes are not a valid AstraForge record (wrong marker, unknown schema, bad body)."""


class NewerSchema(DecodeError):
    """A well-framed record written with a schema (or record type) this reader does not know yet:
    an upgrade is needed to read it, so it must not be skipped."""


class ValidationError(AstraForgeError, ValueError):
    """A record or request is well-formed but violates the contract (unknown type, missing field)."""


class DeliveryFailed(AstraForgeError, IOError):
    """Kafka refused or timed out a record we tried to append."""


class NotFound(AstraForgeError, LookupError):
    """The resource does not exist for this tenant."""
