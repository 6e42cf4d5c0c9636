"""Path and query parameters the routes share: every id is checked against the one
``astraforge.ids.ID_PATTERN`` (a 422 before anything reaches PostgreSQL or Kafka)."""

from typing import Annotated

from fastapi import Path, Query

from astraforge.ids import ID_PATTERN

SandboxId = Annotated[str, Path(pattern=ID_PATTERN, description="A sandbox id (`sb-...`).")]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="A run id (`run-...`).")]
StreamId = Annotated[str, Path(pattern=ID_PATTERN, description="A run id, or a sandbox id.")]
ConversationId = Annotated[str, Path(pattern=ID_PATTERN, description="A conversation id (`cv-...`).")]
ArtifactId = Annotated[str, Path(pattern=ID_PATTERN, description="An artifact (or snapshot) id.")]
CommandId = Annotated[str, Path(pattern=ID_PATTERN, description="An exec's command id.")]
After = Annotated[
    str,
    Query(
        pattern=ID_PATTERN.replace("^", "^(", 1).replace("$", ")?$"),
        description="Page after this id (the previous page's `next_after`).",
    ),
]
IntegrationId = Annotated[str, Path(pattern=ID_PATTERN, description="An integration id (`int-...`).")]
