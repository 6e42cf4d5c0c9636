"""Run guardrails as pure checks: which repositories a tenant may run on, which paths a run may change.

The repository allowlist is the operator's (``Settings.repo_allowlist``: tenant -> URL patterns,
``fnmatch`` style, ``*`` for any tenant); the API refuses any other repository with 403 and a
``guardrail.violated`` record. A pattern's ``*`` matches ``/`` too, so a repository whose path holds a
``.`` or ``..`` segment (``allowed/../elsewhere.git``, percent-encoded or not) is refused before any
pattern is tried: git and HTTP servers resolve those segments, the patterns do not.

Writable paths are the run's: repository-relative, a trailing ``/`` names a directory; an empty list
allows every path. A patch touching any other path is never proposed.
"""

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit


def walks_up(repository: str) -> bool:
    """Whether the repository's path has a ``.`` or ``..`` segment (or a backslash), decoded or not."""
    path = repository if repository.startswith("/") else urlsplit(repository).path
    for text in (path, unquote(path)):
        if "\\" in text or any(segment in (".", "..") for segment in text.split("/")):
            return True
    return False


def repository_allowed(allowlist: Mapping[str, list[str]], tenant: str, repository: str) -> bool:
    """Whether ``repository`` matches one of the tenant's patterns (or one for every tenant, ``*``)."""
    if walks_up(repository):
        return False
    patterns = [*allowlist.get(tenant, []), *allowlist.get("*", [])]
    return any(fnmatchcase(repository, pattern) for pattern in patterns)


def normalise(path: str) -> str | None:
    """A repository-relative path as git names it, or None if it leaves the repository."""
    parts = [p for p in PurePosixPath(path.removeprefix("/workspace/")).parts if p not in ("", ".", "/")]
    if not parts or ".." in parts or (path.startswith("/") and not path.startswith("/workspace/")):
        return None
    return "/".join(parts)


def writable(path: str, allowed: Iterable[str]) -> bool:
    """Whether the run may change ``path`` (repository-relative)."""
    allowed = list(allowed)
    if not allowed:
        return True
    name = normalise(path)
    if name is None:
        return False
    for entry in allowed:
        rule = normalise(entry)
        if rule is None:
            continue
        if entry.endswith("/") and (name == rule or name.startswith(rule + "/")):
            return True
        if name == rule:
            return True
    return False


def forbidden(paths: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """The paths in ``paths`` the run may not change, sorted."""
    allowed = list(allowed)
    return sorted(p for p in set(paths) if not writable(p, allowed))
