"""Where an approved run's branch goes and its merge request is opened: ``local`` (the repository it
was cloned from, a local bare repository), ``github`` and ``gitlab`` (their REST APIs, over httpx).

Tokens travel only in HTTP headers: the API's (``Authorization: Bearer`` for GitHub,
``PRIVATE-TOKEN`` for GitLab) and git's (``http.extraHeader`` with Basic credentials, the way
actions/checkout does it), and git gets its header through its environment (``GIT_CONFIG_COUNT``,
git >= 2.31): never in a remote URL, a command line or a file of the clone.

Opening is idempotent, so an approval redone after a crash (between the push and the record of
the merge request, or between opening it and recording it) opens no second one: an open PR/MR for
the same head and base is looked up first and reused; and when one appears in between, GitHub's
422 ("A pull request already exists") and GitLab's 409 mean the same: look it up and reuse it.
Facts: ../shared/notes/webhooks-and-vcs.md.
"""

import base64
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from astraforge.errors import AstraForgeError

API_TIMEOUT_S = 30.0
GITHUB_API_VERSION = "2022-11-28"


class VcsError(AstraForgeError, RuntimeError):
    """The provider refused or failed (the message says what it answered)."""


@dataclass(frozen=True)
class OpenedMergeRequest:
    url: str
    number: int
    reused: bool = False  # it was open already (an approval redone after a crash)


class VcsProvider(Protocol):
    name: str

    def git_env(self) -> dict[str, str]:
        """Environment that lets git fetch and push the repository (its auth header)."""
        ...

    def open(self, repository: str, branch: str, base: str, title: str, body: str) -> OpenedMergeRequest: ...


def git_header_env(header: str) -> dict[str, str]:
    """git's ``http.extraHeader`` through the environment (nothing on the command line)."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": header}


def basic(user: str, token: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


def project_path(repository: str) -> str:
    """``owner/repo`` (or ``group/sub/project``) of an https repository URL; ``VcsError`` otherwise."""
    parts = urlsplit(repository)
    path = parts.path.strip("/").removesuffix(".git")
    if parts.scheme not in ("http", "https") or parts.username or parts.password or path.count("/") < 1:
        raise VcsError(f"{repository} is not an http(s) repository URL without credentials")
    return path


def _error(response: httpx.Response, what: str) -> VcsError:
    return VcsError(f"{what}: {response.status_code} {response.text[:300]}")


def _found(response: httpx.Response, url: str, number: str, what: str) -> list[OpenedMergeRequest]:
    """The PR/MR(s) an answer describes (one object or a list), read as the API documents them; a
    ``VcsError`` when it is not that JSON (a proxy's page, a truncated body): the provider failed."""
    try:
        body = response.json()
        items = body if isinstance(body, list) else [body]
        found = [OpenedMergeRequest(str(item[url]), int(item[number])) for item in items]
    except (ValueError, KeyError, TypeError) as e:
        raise VcsError(
            f"{what}: {response.status_code} is not the JSON the API documents: {response.text[:200]}"
        ) from e
    for mr in found:
        _web_link(mr.url, what)
    return found


def _web_link(url: str, what: str) -> None:
    """The merge request's URL is recorded and shown to reviewers as a link: a forge (or whatever
    answers as one) gets to name only an http(s) page, never ``javascript:`` or ``data:``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in url for c in "\"'<> \t\r\n"):
        raise VcsError(f"{what}: the merge request URL {url[:200]!r} is not an http(s) link")


class GitHub:
    """Pull requests through the GitHub REST API (``api_url`` https://api.github.com, or a GitHub
    Enterprise server's ``/api/v3``)."""

    name = "github"

    def __init__(self, api_url: str, token: str) -> None:
        self.token = token
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=API_TIMEOUT_S)

    def git_env(self) -> dict[str, str]:
        return git_header_env(basic("x-access-token", self.token))

    def _find(self, path: str, branch: str, base: str) -> OpenedMergeRequest | None:
        owner = path.split("/")[0]
        r = self.http.get(f"/repos/{path}/pulls", params={"head": f"{owner}:{branch}", "base": base, "state": "open"})
        if r.status_code != 200:
            raise _error(r, f"listing the pull requests of {path}")
        found = _found(r, "html_url", "number", f"listing the pull requests of {path}")
        return replace(found[0], reused=True) if found else None

    def open(self, repository: str, branch: str, base: str, title: str, body: str) -> OpenedMergeRequest:
        path = project_path(repository)
        found = self._find(path, branch, base)
        if found is not None:
            return found
        r = self.http.post(f"/repos/{path}/pulls", json={"title": title, "head": branch, "base": base, "body": body})
        if r.status_code == 201:
            return _found(r, "html_url", "number", f"opening a pull request on {path}")[0]
        if r.status_code == 422 and "already exists" in r.text:  # opened meanwhile: reuse it
            found = self._find(path, branch, base)
            if found is not None:
                return found
        raise _error(r, f"opening a pull request on {path}")


class GitLab:
    """Merge requests through the GitLab REST API (``api_url`` https://gitlab.com/api/v4, or a
    self-managed server's)."""

    name = "gitlab"

    def __init__(self, api_url: str, token: str) -> None:
        self.token = token
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers={"PRIVATE-TOKEN": token}, timeout=API_TIMEOUT_S)

    def git_env(self) -> dict[str, str]:
        return git_header_env(basic("oauth2", self.token))

    def _find(self, project: str, branch: str, base: str) -> OpenedMergeRequest | None:
        params = {"state": "opened", "source_branch": branch, "target_branch": base}
        r = self.http.get(f"/projects/{project}/merge_requests", params=params)
        if r.status_code != 200:
            raise _error(r, "listing the merge requests")
        found = _found(r, "web_url", "iid", "listing the merge requests")
        return replace(found[0], reused=True) if found else None

    def open(self, repository: str, branch: str, base: str, title: str, body: str) -> OpenedMergeRequest:
        project = quote(project_path(repository), safe="")  # namespace%2Fproject, as the API documents
        found = self._find(project, branch, base)
        if found is not None:
            return found
        payload = {"source_branch": branch, "target_branch": base, "title": title, "description": body}
        r = self.http.post(f"/projects/{project}/merge_requests", json=payload)
        if r.status_code == 201:
            return _found(r, "web_url", "iid", f"opening a merge request on {project}")[0]
        if r.status_code == 409:  # an open one exists for this source and target: reuse it
            found = self._find(project, branch, base)
            if found is not None:
                return found
        raise _error(r, f"opening a merge request on {project}")


def make_provider(name: str, api_url: str | None, token: str | None) -> VcsProvider | None:
    """The provider ``name`` names (None for ``local``: the driver pushes to the source itself)."""
    if name == "local":
        return None
    if not token:
        raise ValueError(f"vcs_provider {name} needs vcs_token")
    if name == "github":
        return GitHub(api_url or "https://api.github.com", token)
    if name == "gitlab":
        return GitLab(api_url or "https://gitlab.com/api/v4", token)
    raise ValueError(f"unknown vcs_provider {name!r}")
