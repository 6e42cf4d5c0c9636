"""Sentry and GlitchTip payloads in the shapes the notes document (``/work/shared/notes/
webhooks-and-vcs.md``), and signing the way Sentry does: HMAC-SHA256 under the client secret over
the exact body bytes sent (compact JSON, ``separators=(",", ":")``), lowercase hex."""

import hashlib
import hmac
import json
import time
import uuid

ORG = "acme"
PROJECT_SLUG = "calc-service"
PROJECT_ID = 4504


def body_bytes(payload: dict) -> bytes:
    """What Sentry puts on the wire: simplejson with compact separators."""
    return json.dumps(payload, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sentry_headers(secret: str, body: bytes, resource: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Request-ID": uuid.uuid4().hex,
        "Sentry-Hook-Resource": resource,
        "Sentry-Hook-Timestamp": str(int(time.time())),
        "Sentry-Hook-Signature": sign(secret, body),
    }


def webhook_frames() -> list[dict]:
    """Oldest first; the crash frame last (snake_case, as in a webhook)."""
    return [
        {
            "filename": "django/core/handlers/base.py",
            "abs_path": "/usr/lib/python3/django/core/handlers/base.py",
            "lineno": 197,
            "colno": None,
            "function": "_get_response",
            "module": "django.core.handlers.base",
            "in_app": False,
            "context_line": "response = wrapped_callback(request)",
            "pre_context": [],
            "post_context": [],
            "vars": {},
        },
        {
            "filename": "views.py",
            "abs_path": "/srv/app/views.py",
            "lineno": 12,
            "colno": None,
            "function": "total",
            "module": "views",
            "in_app": True,
            "context_line": "    check(add(2, 3))",
            "pre_context": [],
            "post_context": [],
            "vars": {},
        },
        {
            "filename": "calc.py",
            "abs_path": "/srv/app/calc.py",
            "lineno": 2,
            "colno": None,
            "function": "add",
            "module": "calc",
            "in_app": True,
            "context_line": "    return a - b",
            "pre_context": ["def add(a, b):"],
            "post_context": [],
            "vars": {"a": "2", "b": "3"},
        },
    ]


def event_alert(issue_id: str, project_slug: str = PROJECT_SLUG) -> dict:
    """``event_alert.triggered``: the stack trace is in ``data.event.exception``."""
    event_id = uuid.uuid4().hex
    return {
        "action": "triggered",
        "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
        "data": {
            "triggered_rule": "Send a notification for new issues",
            "issue_alert": {"title": "Remediate", "settings": []},
            "event": {
                "event_id": event_id,
                "issue_id": issue_id,
                "issue_url": f"https://sentry.io/api/0/issues/{issue_id}/",
                "url": f"https://sentry.io/api/0/projects/{ORG}/{project_slug}/events/{event_id}/",
                "web_url": f"https://sentry.io/organizations/{ORG}/issues/{issue_id}/events/{event_id}/",
                "project": PROJECT_ID,
                "platform": "python",
                "level": "error",
                "title": "AssertionError: add(2, 3) returned -1",
                "culprit": "calc in add",
                "location": "calc.py",
                "message": "",
                "logger": "",
                "release": "calc@1.4.2",
                "environment": "production",
                "datetime": "2026-11-30T07:00:00.000000Z",
                "timestamp": 1796022000.0,
                "fingerprint": ["{{ default }}"],
                "hashes": ["c4a4d06bc314205bb8c1a1c8d1b8a0d1"],
                "metadata": {"type": "AssertionError", "value": "add(2, 3) returned -1", "filename": "calc.py"},
                "tags": [["environment", "production"], ["level", "error"], ["release", "calc@1.4.2"]],
                "contexts": {},
                "sdk": {"name": "sentry.python", "version": "2.19.0"},
                "request": {},
                "user": {},
                "exception": {
                    "values": [
                        {
                            "type": "AssertionError",
                            "value": "add(2, 3) returned -1",
                            "mechanism": {"handled": False, "type": "django"},
                            "stacktrace": {"frames": webhook_frames()},
                        }
                    ]
                },
            },
        },
        "actor": {"id": "sentry", "name": "Sentry", "type": "application"},
    }


def issue_created(issue_id: str, project_slug: str = PROJECT_SLUG) -> dict:
    """``issue.created``: no stack trace, no fingerprint (enrich through the API)."""
    return {
        "action": "created",
        "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
        "data": {
            "issue": {
                "id": issue_id,
                "shortId": "CALC-1A",
                "title": "AssertionError: add(2, 3) returned -1",
                "culprit": "calc in add",
                "level": "error",
                "status": "unresolved",
                "substatus": "new",
                "statusDetails": {},
                "type": "error",
                "platform": "python",
                "metadata": {"type": "AssertionError", "value": "add(2, 3) returned -1", "filename": "calc.py"},
                "project": {"id": str(PROJECT_ID), "name": "Calc service", "slug": project_slug, "platform": "python"},
                "count": "1",
                "userCount": 0,
                "firstSeen": "2026-11-30T07:00:00.000000Z",
                "lastSeen": "2026-11-30T07:00:00.000000Z",
                "assignedTo": None,
                "permalink": None,
                "url": f"https://sentry.io/api/0/organizations/{ORG}/issues/{issue_id}/",
                "web_url": f"https://sentry.io/organizations/{ORG}/issues/{issue_id}/",
                "project_url": f"https://sentry.io/organizations/{ORG}/issues/?project={PROJECT_ID}",
            }
        },
        "actor": {"id": "sentry", "name": "Sentry", "type": "application"},
    }


def installation() -> dict:
    return {
        "action": "created",
        "installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec"},
        "data": {"installation": {"uuid": "eac5a0ae-60ec-418f-9318-46dc5e7e52ec", "status": "installed"}},
        "actor": {"id": 1, "name": "colleen", "type": "user"},
    }


def rest_latest_event(issue_id: str) -> dict:
    """``GET .../issues/{id}/events/latest/``: the exception in ``entries[]``, frames camelCase."""
    frames = [
        {
            "filename": f["filename"],
            "absPath": f["abs_path"],
            "lineNo": f["lineno"],
            "colNo": None,
            "function": f["function"],
            "module": f["module"],
            "inApp": f["in_app"],
            "context": [[f["lineno"], f["context_line"]]],
        }
        for f in webhook_frames()
    ]
    return {
        "id": "2b6f4c1e9d7a4f0e8c3b5a6d7e8f9a0b",
        "eventID": "2b6f4c1e9d7a4f0e8c3b5a6d7e8f9a0b",
        "groupID": issue_id,
        "title": "AssertionError: add(2, 3) returned -1",
        "release": {"version": "calc@1.4.3"},
        "tags": [{"key": "environment", "value": "staging"}, {"key": "level", "value": "error"}],
        "entries": [
            {
                "type": "exception",
                "data": {
                    "values": [
                        {"type": "AssertionError", "value": "add(2, 3) returned -1", "stacktrace": {"frames": frames}}
                    ]
                },
            },
        ],
    }


def glitchtip_alert(base_url: str, issue_ids: list[str], project_name: str = "Calc service") -> dict:
    """GlitchTip's generic (Slack-compatible) webhook: no signature, no stack trace, the issue id in
    ``title_link`` only."""
    return {
        "text": "GlitchTip Alert" if len(issue_ids) == 1 else f"GlitchTip Alert ({len(issue_ids)} issues)",
        "attachments": [
            {
                "title": "AssertionError: add(2, 3) returned -1",
                "title_link": f"{base_url}/{ORG}/issues/{issue_id}",
                "text": "calc in add",
                "image_url": None,
                "color": "#e52b50",
                "mrkdown_in": ["text"],
                "fields": [
                    {"title": "Project", "value": project_name, "short": True},
                    {"title": "Environment", "value": "production", "short": True},
                    {"title": "Server Name", "value": "web-1", "short": True},
                    {"title": "Release", "value": "calc@1.4.2", "short": False},
                ],
            }
            for issue_id in issue_ids
        ],
        "sections": [],
    }
