"""A stand-in for GitHub and GitLab under tests/: git over smart HTTP (``git http-backend`` on bare
repositories) and the REST calls the platform makes, checked as the real APIs document them
(../shared/notes/webhooks-and-vcs.md). It is a test fixture, never used at runtime.

- git: ``/<owner>/<repo>.git/...``; every request must carry ``Authorization: Basic`` of the
  expected user and token (401 with ``WWW-Authenticate`` otherwise, as GitHub and GitLab answer).
- GitHub (``/api/v3``, a GitHub Enterprise server's prefix): ``Authorization: Bearer <token>``,
  ``Accept: application/vnd.github+json``, ``X-GitHub-Api-Version: 2022-11-28``;
  ``POST /repos/{o}/{r}/pulls`` needs ``title``, ``head`` (a pushed branch) and ``base`` and answers
  422 "A pull request already exists for o:branch." for an open one; ``GET`` filters by ``head``
  (``owner:branch``), ``base`` and ``state``.
- GitLab (``/api/v4``): ``PRIVATE-TOKEN`` (or ``Authorization: Bearer``); the project id is the
  URL-encoded path (``group%2Fproject``: a decoded ``/`` is 404, as behind a decoding proxy);
  ``POST .../merge_requests`` needs ``source_branch`` (pushed), ``target_branch``, ``title``; 409 for
  an open one with the same branches, 422 for source == target; ``GET`` filters by ``state``,
  ``source_branch``, ``target_branch``.

Every request is recorded (method, raw path, headers, JSON body) for the tests' assertions.
"""

import base64
import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Seen:
    method: str
    path: str  # raw, as sent (percent-encoding kept)
    headers: dict[str, str]  # names in lower case
    body: Any = None


@dataclass
class Forge:
    """One server's repositories, requests and pull/merge requests."""

    root: Path  # bare repositories: root/<owner>/<repo>.git
    token: str
    git_user: str  # x-access-token (GitHub) or oauth2 (GitLab)
    requests: list[Seen] = field(default_factory=list)
    pulls: list[dict] = field(default_factory=list)
    lagging_lists: int = 0  # the next N list calls miss what exists (a list that lags behind a create)
    hold_creates: threading.Event | None = None  # a create waits for it (then opens the PR all the same)
    create_arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def branch_exists(self, project: str, branch: str) -> bool:
        done = subprocess.run(
            ["git", "--git-dir", str(self.root / f"{project}.git"), "rev-parse", "--verify", f"refs/heads/{branch}"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


class Handler(BaseHTTPRequestHandler):
    forge: Forge
    url: str

    def log_message(self, *args) -> None:
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _lagging(self) -> bool:
        with self.forge.lock:
            if self.forge.lagging_lists > 0:
                self.forge.lagging_lists -= 1
                return True
        return False

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        raw = self._body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path
        is_api = path.startswith(("/api/v3/", "/api/v4/"))
        body = json.loads(raw) if is_api and raw else None
        with self.forge.lock:
            self.forge.requests.append(Seen(method, path, headers, body))
        if path.startswith("/api/v3/"):
            self._github(method, path.removeprefix("/api/v3"), headers, body)
        elif path.startswith("/api/v4/"):
            self._gitlab(method, path.removeprefix("/api/v4"), headers, body)
        else:
            self._git(method, headers, raw)

    # -- git smart HTTP --------------------------------------------------------------------------
    def _git(self, method: str, headers: dict[str, str], body: bytes) -> None:
        expected = "Basic " + base64.b64encode(f"{self.forge.git_user}:{self.forge.token}".encode()).decode()
        if headers.get("authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        parts = urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.forge.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "REMOTE_USER": self.forge.git_user,  # lets http-backend take pushes
            "REQUEST_METHOD": method,
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "CONTENT_TYPE": headers.get("content-type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": headers.get("content-encoding", ""),
            "GIT_PROTOCOL": headers.get("git-protocol", ""),
        }
        done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
        head, _, payload = done.stdout.partition(b"\r\n\r\n")
        status = 200
        lines = []
        for line in head.decode(errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                lines.append((name, value.strip()))
        self.send_response(status)
        for name, value in lines:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    # -- GitHub ----------------------------------------------------------------------------------
    def _github(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        if headers.get("authorization") != f"Bearer {self.forge.token}":
            return self._json(401, {"message": "Bad credentials"})
        if headers.get("x-github-api-version") not in (None, "2022-11-28"):
            return self._json(400, {"message": "Unsupported API version"})
        if headers.get("accept") != "application/vnd.github+json":
            return self._json(415, {"message": "Unsupported 'Accept' header"})
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        if len(segments) != 4 or segments[0] != "repos" or segments[3] != "pulls":
            return self._json(404, {"message": "Not Found"})
        owner, repo = segments[1], segments[2]
        project = f"{owner}/{repo}"
        if not (self.forge.root / f"{project}.git").is_dir():
            return self._json(404, {"message": "Not Found"})
        mine = [p for p in self.forge.pulls if p["project"] == project]
        if method == "GET":
            if self._lagging():
                return self._json(200, [])
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            found = [
                p["json"]
                for p in mine
                if q.get("state", "open") in ("all", p["json"]["state"])
                and ("head" not in q or q["head"] == p["json"]["head"]["label"])
                and ("base" not in q or q["base"] == p["json"]["base"]["ref"])
            ]
            return self._json(200, found)
        missing = [k for k in ("head", "base", "title") if not (body or {}).get(k)]
        if missing:
            errors = [{"resource": "PullRequest", "field": k, "code": "missing_field"} for k in missing]
            return self._json(422, {"message": "Validation Failed", "errors": errors})
        head = body["head"].split(":")[-1]
        if not self.forge.branch_exists(project, head):
            errors = [{"resource": "PullRequest", "field": "head", "code": "invalid"}]
            return self._json(422, {"message": "Validation Failed", "errors": errors})
        label = f"{owner}:{head}"
        if self.forge.hold_creates is not None:  # the client may be gone when it goes on: opened, never answered
            self.forge.create_arrived.set()
            self.forge.hold_creates.wait(120)
        with self.forge.lock:
            if any(
                (p["json"]["state"], p["json"]["head"]["label"], p["json"]["base"]["ref"])
                == ("open", label, body["base"])
                for p in mine
            ):
                message = f"A pull request already exists for {label}."
                error = {"resource": "PullRequest", "code": "custom", "message": message}
                return self._json(422, {"message": "Validation Failed", "errors": [error]})
            number = len(mine) + 1
            pull = {
                "number": number,
                "html_url": f"{self.url}/{project}/pull/{number}",
                "url": f"{self.url}/api/v3/repos/{project}/pulls/{number}",
                "state": "open",
                "title": body["title"],
                "body": body.get("body"),
                "head": {"ref": head, "label": label},
                "base": {"ref": body["base"]},
            }
            self.forge.pulls.append({"project": project, "json": pull})
        self._json(201, pull, {"Location": pull["url"]})

    # -- GitLab ----------------------------------------------------------------------------------
    def _gitlab(self, method: str, path: str, headers: dict[str, str], body: Any) -> None:
        if self.forge.token not in (headers.get("private-token"), headers.get("authorization", "")[7:]):
            return self._json(401, {"message": "401 Unauthorized"})
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")  # the encoded %2F keeps the project one segment
        if len(segments) != 3 or segments[0] != "projects" or segments[2] != "merge_requests":
            return self._json(404, {"message": "404 Not Found"})
        project = unquote(segments[1])
        if not (self.forge.root / f"{project}.git").is_dir():
            return self._json(404, {"message": "404 Project Not Found"})
        mine = [p for p in self.forge.pulls if p["project"] == project]
        if method == "GET":
            if self._lagging():
                return self._json(200, [])
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            found = [
                p["json"]
                for p in mine
                if q.get("state", "all") in ("all", p["json"]["state"])
                and q.get("source_branch", p["json"]["source_branch"]) == p["json"]["source_branch"]
                and q.get("target_branch", p["json"]["target_branch"]) == p["json"]["target_branch"]
            ]
            return self._json(200, found)
        missing = [k for k in ("source_branch", "target_branch", "title") if not (body or {}).get(k)]
        if missing:
            return self._json(400, {"error": f"{', '.join(missing)} is missing"})
        source, target = body["source_branch"], body["target_branch"]
        if source == target:
            return self._json(422, {"message": ["You can't use same project/branch for source and target"]})
        if not self.forge.branch_exists(project, source):
            return self._json(422, {"message": ["Source branch does not exist"]})
        with self.forge.lock:
            for p in mine:
                j = p["json"]
                if j["state"] == "opened" and (j["source_branch"], j["target_branch"]) == (source, target):
                    message = f"Another open merge request already exists for this source branch: !{j['iid']}"
                    return self._json(409, {"message": [message]})
            iid = len(mine) + 1
            mr = {
                "id": 1000 + len(self.forge.pulls),
                "iid": iid,
                "web_url": f"{self.url}/{project}/-/merge_requests/{iid}",
                "references": {"short": f"!{iid}", "full": f"{project}!{iid}"},
                "state": "opened",
                "title": body["title"],
                "description": body.get("description"),
                "source_branch": source,
                "target_branch": target,
            }
            self.forge.pulls.append({"project": project, "json": mr})
        self._json(201, mr)


class ForgeServer:
    """The stand-in on 127.0.0.1 (a free port), for ``with``: ``url``, ``forge``."""

    def __init__(self, root: Path, token: str, git_user: str) -> None:
        self.forge = Forge(root, token, git_user)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.server.RequestHandlerClass = type("Bound", (Handler,), {"forge": self.forge, "url": self.url})
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ForgeServer":
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.server.shutdown()
        self.server.server_close()
