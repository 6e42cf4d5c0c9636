"""An alert as a request: the ``run.create`` payload of a remediation run, with a spec that carries
the error (type and message), the culprit, the in-app frames with file and line, the release and
environment, and the link back to the issue."""

from typing import Any

from astraforge.integrations import Integration, ProjectRoute

MAX_SPEC_FRAMES = 25
SOURCE_NAMES = {"sentry": "Sentry", "glitchtip": "GlitchTip"}


def spec(alert: dict[str, Any]) -> str:
    source = SOURCE_NAMES.get(alert["source"], alert["source"])
    error = ": ".join(x for x in (alert.get("exception_type"), alert.get("exception_value")) if x) or alert["title"]
    lines = [
        f"Fix the production error reported by {source} issue {alert['alert_id']}: {alert['title']}",
        "",
        f"Error: {error}",
        f"Culprit: {alert.get('culprit') or 'unknown'}",
        f"Release: {alert.get('release') or 'unknown'}",
        f"Environment: {alert.get('environment') or 'unknown'}",
        f"Issue: {alert.get('web_url') or alert.get('issue_url') or 'n/a'}",
        "",
    ]
    frames = [f for f in alert.get("frames") or [] if f.get("in_app")] or list(alert.get("frames") or [])
    if frames:
        lines.append("Stack trace (in-app frames, most recent call last):")
        for f in frames[-MAX_SPEC_FRAMES:]:
            where = f.get("filename") or f.get("abs_path") or f.get("module") or "?"
            lines.append(f"  {where}:{f.get('lineno') or '?'} in {f.get('function') or '?'}")
            if f.get("context_line"):
                lines.append(f"      {f['context_line'].strip()}")
    else:
        lines.append("Stack trace: not available (the alert carried none and enrichment found none).")
    return "\n".join(lines) + "\n"


def title(alert: dict[str, Any]) -> str:
    error = ": ".join(x for x in (alert.get("exception_type"), alert.get("exception_value")) if x)
    return f"Fix {error or alert['title']}"[:200]


def run_create(integration: Integration, route: ProjectRoute, alert: dict[str, Any]) -> dict[str, Any]:
    """The ``RunCreate`` record of the run that remediates ``alert`` (as ``POST /v1/requests`` builds it)."""
    return {
        "title": title(alert),
        "spec": spec(alert),
        "agent": integration.agent,
        "repo_url": route.repository,
        "base_ref": route.base_branch or "main",
        "test_command": integration.test_command,
        "source": "webhook",
        "alert_id": f"{integration.integration_id}/{alert['alert_id']}",
        "writable_paths": integration.writable_paths,
        "steps": integration.steps,
        "egress_allow": [],
        "model": None,
        "issue_url": alert.get("web_url") or alert.get("issue_url"),
    }
