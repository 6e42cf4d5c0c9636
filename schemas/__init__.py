"""The event language: Avro schemas for every record (``avro/``), the released history
(``history/``) and the single-object codec. A record type (``exec.output``) names its payload
record through the ``astraforge.types`` attribute of that record's schema, so the .avsc files are
the only place the contract is written down."""

from astraforge.schemas.codec import Codec, Envelope, default_codec
from astraforge.schemas.registry import SchemaRegistry

__all__ = ["Codec", "Envelope", "SchemaRegistry", "default_codec"]
