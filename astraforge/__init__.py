"""AstraForge: a sandbox platform for AI coding agents on an immutable Kafka event log.

The top-level folders of the repository are mapped onto this package (``astraforge.api`` is
``api/``, ``astraforge.schemas`` is ``schemas/``...); this folder holds only what they share:
settings, errors, ids and the command-line tool.
"""

__version__ = "0.1.0"
