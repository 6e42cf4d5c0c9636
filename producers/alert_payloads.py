"""Sentry and GlitchTip payloads -> the ``AlertReceived`` record (a plain dict), and Sentry REST events
-> stack frames. Field facts: ``/work/shared/notes/webhooks-and-vcs.md`` (webhook frames are
snake_case, REST frames camelCase; GlitchTip carries no stack trace, only the issue link).

Everything is bounded (frames, string lengths) so one alert is one small record; a body that is not
the documented shape raises ``MalformedAlert`` (the intake answers 400).
"""

import re
from typing import Any

from astraforge.errors import AstraForgeError

MAX_FRAMES = 60  # the most recent ones (the crash frame is last)
MAX_TEXT = 2000
SENTRY_EVENT_URL = re.compile(r"/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/events/")
GLITCHTIP_ISSUE_LINK = re.compile(r"/(?P<org>[^/]+)/issues/(?P<issue>\d+)/?$")
ACTIONABLE_ISSUE_ACTIONS = ("created", "unresolved")


class MalformedAlert(AstraForgeError, ValueError):
    """The body is not a payload of the kind it claims to be."""


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value).replace("\x00", "")[:limit]


def _dict(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise MalformedAlert(f"`{what}` must be an object")
    return value


def _list(value: Any) -> list:
    """``value`` if it is a list, else empty (a body's ``"frames": 5`` is no list to walk)."""
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def alert(source: str, issue_id: str, title: str, **fields: Any) -> dict[str, Any]:
    """An ``AlertReceived`` payload with every field present."""
    record = {
        "source": source,
        "alert_id": issue_id,
        "title": title,
        "culprit": None,
        "project": None,
        "issue_url": None,
        "fingerprint": None,
        "level": None,
        "stacktrace": None,
        "raw_json": "{}",
        "integration_id": None,
        "resource": "event_alert",
        "action": None,
        "delivery_id": None,
        "event_id": None,
        "exception_type": None,
        "exception_value": None,
        "frames": [],
        "release": None,
        "environment": None,
        "web_url": None,
        "project_id": None,
        "actionable": True,
    }
    record.update(fields)
    return record


def frame(raw: dict) -> dict[str, Any]:
    """One ``AlertFrame`` from a webhook frame (snake_case) or a REST frame (camelCase)."""
    context = raw.get("context_line")
    if context is None and isinstance(raw.get("context"), list):  # REST: [[lineno, text], ...]
        line = _int(raw.get("lineNo"))
        context = next((c[1] for c in raw["context"] if isinstance(c, list) and len(c) == 2 and c[0] == line), None)
    return {
        "filename": _text(raw.get("filename"), 1000),
        "abs_path": _text(raw.get("abs_path", raw.get("absPath")), 1000),
        "lineno": _int(raw.get("lineno", raw.get("lineNo"))),
        "colno": _int(raw.get("colno", raw.get("colNo"))),
        "function": _text(raw.get("function"), 500),
        "module": _text(raw.get("module"), 500),
        "in_app": bool(raw.get("in_app", raw.get("inApp")) or False),
        "context_line": _text(context, 500),
    }


def exception_of(values: Any) -> tuple[str | None, str | None, list[dict]]:
    """Type, message and frames of the main exception (the last of ``values``)."""
    if not isinstance(values, list) or not values or not isinstance(values[-1], dict):
        return None, None, []
    main = values[-1]
    stack = main.get("stacktrace") if isinstance(main.get("stacktrace"), dict) else {}
    frames = [frame(f) for f in _list(stack.get("frames")) if isinstance(f, dict)][-MAX_FRAMES:]
    return _text(main.get("type"), 500), _text(main.get("value")), frames


def _tag(tags: Any, name: str) -> str | None:
    """A tag's value from ``[[k, v], ...]`` (webhook) or ``[{key, value}, ...]`` (REST)."""
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, list) and len(tag) == 2 and tag[0] == name:
            return _text(tag[1], 200)
        if isinstance(tag, dict) and tag.get("key") == name:
            return _text(tag.get("value"), 200)
    return None


def sentry(resource: str, body: Any, delivery_id: str | None) -> dict[str, Any]:
    """A Sentry integration-platform webhook: ``event_alert`` (stack trace included), ``issue`` (to be
    enriched), anything else acknowledged and recorded only."""
    body = _dict(body, "body")
    data = _dict(body.get("data", {}), "data")
    action = _text(body.get("action"), 100)
    common = {"resource": _text(resource, 100) or "unknown", "action": action, "delivery_id": delivery_id}
    if resource == "event_alert":
        event = _dict(data.get("event"), "data.event")
        if not _text(event.get("issue_id"), 100):  # an object or a list is no id (nor is "")
            raise MalformedAlert("`data.event.issue_id` is missing or not a string or number")
        exc = event.get("exception") if isinstance(event.get("exception"), dict) else {}
        type_, value, frames = exception_of(exc.get("values"))
        meta = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
        url = SENTRY_EVENT_URL.search(str(event.get("url") or ""))
        release = event.get("release")
        return alert(
            "sentry",
            _text(event["issue_id"], 100),
            _text(event.get("title"), 500) or type_ or "Sentry alert",
            culprit=_text(event.get("culprit"), 500),
            project=url["project"] if url else None,
            project_id=_text(event.get("project"), 100),
            issue_url=_text(event.get("issue_url"), 1000),
            fingerprint=_text(",".join(map(str, _list(event.get("fingerprint")))), 500) or None,
            level=_text(event.get("level"), 50),
            event_id=_text(event.get("event_id"), 100),
            exception_type=type_ or _text(meta.get("type"), 500),
            exception_value=value or _text(meta.get("value")),
            frames=frames,
            release=_text(release.get("version") if isinstance(release, dict) else release, 200),
            environment=_text(event.get("environment"), 200) or _tag(event.get("tags"), "environment"),
            web_url=_text(event.get("web_url"), 1000),
            **common,
        )
    if resource == "issue":
        issue = _dict(data.get("issue"), "data.issue")
        if not _text(issue.get("id"), 100):
            raise MalformedAlert("`data.issue.id` is missing or not a string or number")
        meta = issue.get("metadata") if isinstance(issue.get("metadata"), dict) else {}
        project = issue.get("project") if isinstance(issue.get("project"), dict) else {}
        return alert(
            "sentry",
            _text(issue["id"], 100),
            _text(issue.get("title"), 500) or "Sentry issue",
            culprit=_text(issue.get("culprit"), 500),
            project=_text(project.get("slug"), 200),
            project_id=_text(project.get("id"), 100),
            issue_url=_text(issue.get("url"), 1000),
            level=_text(issue.get("level"), 50),
            exception_type=_text(meta.get("type"), 500),
            exception_value=_text(meta.get("value")),
            web_url=_text(issue.get("web_url") or issue.get("permalink"), 1000),
            actionable=action in ACTIONABLE_ISSUE_ACTIONS,
            **common,
        )
    return alert("sentry", "", f"{common['resource']} {action or ''}".strip(), actionable=False, **common)


def glitchtip(body: Any) -> list[dict[str, Any]]:
    """A GlitchTip (Slack-compatible) alert: one record per issue attachment; an attachment that
    names no issue (an uptime alert) is recorded only."""
    body = _dict(body, "body")
    attachments = body.get("attachments")
    if not isinstance(body.get("text"), str) or not isinstance(attachments, list) or not attachments:
        raise MalformedAlert("a GlitchTip alert has `text` and a non-empty `attachments` list")
    alerts = []
    for raw in attachments[:50]:
        a = _dict(raw, "attachments[]")
        fields = {
            f.get("title"): _text(f.get("value"), 500)
            for f in _list(a.get("fields"))
            if isinstance(f, dict) and isinstance(f.get("title"), str)
        }
        link = _text(a.get("title_link"), 1000)
        found = GLITCHTIP_ISSUE_LINK.search(link or "")
        alerts.append(
            alert(
                "glitchtip",
                found["issue"] if found else "",
                _text(a.get("title"), 500) or _text(body["text"], 500) or "GlitchTip alert",
                culprit=_text(a.get("text"), 500),
                project=fields.get("Project"),
                release=fields.get("Release"),
                environment=fields.get("Environment"),
                web_url=link,
                resource="alert",
                action=_text(body["text"], 200),
                actionable=found is not None,
            )
        )
    return alerts


def rest_event(event: Any) -> dict[str, Any]:
    """What enrichment adds from a REST event (``.../events/latest/``): exception, frames, release,
    environment. Frames sit in ``entries[type=exception]`` (camelCase), or in ``exception`` (raw JSON)."""
    event = _dict(event, "event")
    values = None
    for entry in _list(event.get("entries")):
        if isinstance(entry, dict) and entry.get("type") == "exception" and isinstance(entry.get("data"), dict):
            values = entry["data"].get("values")
    if values is None and isinstance(event.get("exception"), dict):
        values = event["exception"].get("values")
    type_, value, frames = exception_of(values)
    release = event.get("release")
    found = {
        "event_id": _text(event.get("eventID") or event.get("event_id") or event.get("id"), 100),
        "exception_type": type_,
        "exception_value": value,
        "frames": frames,
        "release": _text(release.get("version") if isinstance(release, dict) else release, 200),
        "environment": _tag(event.get("tags"), "environment") or _text(event.get("environment"), 200),
    }
    return {k: v for k, v in found.items() if v}
