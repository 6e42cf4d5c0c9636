"""The alerts processor: ``alert.receive`` commands in (the webhook intake's), remediation runs out.

Each alert is decided once (``state.decide``): its ``alert.received`` fact and an ``alert.*`` decision
record go to the integration's stream and, to start a run, a ``run.create`` command to the run's
stream, which the run orchestrator takes like any request. The decision, the PostgreSQL state it
changes and the partition's next offset commit together, after Kafka acknowledged the records;
a redelivered alert is skipped, one redone after a crash before that commit decides the same
(records carry derived event ids; the run id is derived too, and the orchestrator accepts it once).

A tick (every ``tick_s``) starts queued alerts once their project's rate window has room and posts
each ended run's outcome back to its issue, once in effect: the comment carries a marker unique to
the run, and a comment the issue already holds with it (a crash between the post and its record) is
not posted again.

Not provided: an alert that arrives while its issue's run has just ended but is not yet projected
attaches to that run (the projection lags by milliseconds); enrichment and comments wait on the
issue tracker's API for at most ``alert_api_timeout_s`` each, holding the partition meanwhile.
"""

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

import psycopg

from astraforge import integrations
from astraforge.config import Settings
from astraforge.db import connect
from astraforge.errors import DecodeError
from astraforge.integrations import Integration
from astraforge.processors.alerts import remediation, store
from astraforge.processors.alerts.issue_api import IssueApi, IssueApiFailed
from astraforge.processors.alerts.state import AlertOutcome, decide, derived_event_id, window_full
from astraforge.processors.base import CommandProcessor
from astraforge.processors.runs.guardrails import repository_allowed
from astraforge.processors.runs.state import ENDED
from astraforge.processors.runtime import Source, append_durably
from astraforge.producers.alert_payloads import rest_event
from astraforge.sandbox.egress_addresses import AddressPolicy
from astraforge.schemas import Envelope
from astraforge.secretbox import SecretBox, SecretUnreadable

LOG = logging.getLogger(__name__)
NAME = "alerts"
ACTOR = "processor:alerts"


def comment_marker(run_id: str) -> str:
    """The line that makes a run's comment findable on its issue (``IssueApi.comment_once``)."""
    return f"[astraforge:{run_id}]"


class AlertsProcessor(CommandProcessor):
    name = NAME

    def __init__(self, settings: Settings, tick_s: float = 2.0) -> None:
        self.box = SecretBox.from_settings(settings)  # refused (no key) before the base builds anything
        self.policy = AddressPolicy.from_settings(settings)  # what a tenant's API URL may not reach
        super().__init__(settings)
        self.tick_s = tick_s
        self.db_lock = threading.Lock()  # one connection, used by the handler and the tick
        try:
            self.db = self._connect()
            with self.db.transaction():
                store.ensure_schema(self.db)
        except BaseException:
            self.close()  # what the base took (its loop, its producer) goes with a refused start
            raise
        self.consumer = f"{settings.topic_prefix}-{NAME}"

    def _connect(self) -> psycopg.Connection:
        db = connect(self.settings)
        # a commit lost to a PostgreSQL crash is redone identically from Kafka (the alert is read again,
        # decided the same, its records carry derived ids): no need to wait for the WAL flush per alert
        db.execute("SET synchronous_commit = off")
        db.commit()
        return db

    # -- the partition loop -----------------------------------------------------------------
    async def deliver(self, source: Source, value: bytes) -> None:
        await asyncio.to_thread(self._handle_surely, source, value)

    def _handle_surely(self, source: Source, value: bytes) -> None:
        """Handle a record; while PostgreSQL is away, retry it (never skip an accepted alert); a
        record this processor cannot handle for any other reason is dead-lettered, not retried forever."""
        while True:
            try:
                return self.handle(source.partition, source.offset, value)
            except psycopg.Error:
                LOG.exception("alert at %s/%s: PostgreSQL failed; retrying", source.partition, source.offset)
                if self.stop_event.wait(1.0):
                    raise
                self._reconnect()
            except Exception as e:
                LOG.exception("alert at %s/%s cannot be handled", source.partition, source.offset)
                self.dead_letter(source, value, f"{type(e).__name__}: {e}")
                return None

    def _reconnect(self) -> None:
        with self.db_lock:
            with contextlib.suppress(Exception):
                self.db.close()
            try:
                self.db = self._connect()
            except Exception:
                LOG.warning("PostgreSQL still unavailable")

    def handle(self, partition: int, offset: int, value: bytes) -> None:
        try:
            command = self.codec.decode(value)
        except DecodeError:
            return  # the sandbox processor dead-letters what nobody can read
        if command.type != "alert.receive":
            return
        with self.db_lock, self.db.transaction():
            if offset < store.lock_partition(self.db, self.consumer, partition):
                return  # decided before (a redelivery)
            self._decide(command, command.occurred_at, from_queue=False)
            store.handled(self.db, self.consumer, partition, offset)

    def _integration(self, integration_id: str) -> Integration | None:
        row = self.db.execute(integrations.SELECT_ANY, (integration_id,)).fetchone()
        return integrations.from_row(row) if row else None

    def _decide(self, command: Envelope, at_us: int, from_queue: bool) -> AlertOutcome:
        """Decide one alert, append its records (acknowledged), change the state (in the caller's transaction)."""
        alert = dict(command.payload)
        integration = self._integration(alert["integration_id"])
        records = [] if from_queue else [self._fact(command, "alert.received", alert)]
        if integration is None or integration.secret_sealed is None:  # deleted: its secrets are erased
            if from_queue:
                store.queue_cleared(self.db, alert["integration_id"], alert["alert_id"])
            outcome = AlertOutcome("ignore", reason="the integration was deleted")
            return self._finish(command, records, outcome, None, alert)
        found = integration.route(alert.get("project"), alert.get("project_id"))
        project = found[0] if found else None
        issue = store.issue(self.db, integration.integration_id, alert["alert_id"])
        since = at_us - integration.rate_limit_window_s * 1_000_000
        outcome = decide(
            integration.integration_id,
            alert,
            issue,
            store.run_state(self.db, self.settings.projection_schema, issue.run_id, at_us),
            project,
            store.starts(self.db, integration.integration_id, project, since) if project else [],
            at_us,
            integration.rate_limit_runs,
            integration.rate_limit_window_s,
            from_queue,
        )
        if outcome.kind == "start" and not repository_allowed(
            self.settings.repo_allowlist, integration.tenant_id, found[1].repository
        ):
            outcome = AlertOutcome("ignore", reason=f"repository {found[1].repository} is not on the allowlist")
        if outcome.kind == "start":
            alert, note = self._enriched(integration, alert)
            if note:
                outcome = AlertOutcome("start", outcome.run_id, note)
            create = remediation.run_create(integration, found[1], alert)
            records.append(
                Envelope(
                    type="run.create",
                    stream_id=outcome.run_id,
                    tenant_id=integration.tenant_id,
                    actor=ACTOR,
                    causation_id=command.event_id,
                    correlation_id=command.event_id,
                    event_id=derived_event_id(command.event_id, "run.create"),
                    payload=create,
                )
            )
            store.started(self.db, integration.integration_id, alert["alert_id"], project, outcome.run_id, at_us)
        elif outcome.kind == "queue":
            store.queue(self.db, integration.integration_id, alert["alert_id"], self._queued(command), at_us)
        elif from_queue:  # no longer startable (the mapping or the integration went): leaves the queue
            store.queue_cleared(self.db, integration.integration_id, alert["alert_id"])
        return self._finish(command, records, outcome, project, alert)

    def _finish(
        self, command: Envelope, records: list[Envelope], outcome: AlertOutcome, project: str | None, alert: dict
    ) -> AlertOutcome:
        decision = {
            "alert_event_id": command.event_id,
            "issue_id": alert["alert_id"],
            "project": project,
            "run_id": outcome.run_id,
            "reason": outcome.reason,
        }
        at = 1 if records and records[0].type == "alert.received" else 0  # the fact, the decision, the run
        records.insert(at, self._fact(command, outcome.record_type, decision))
        append_durably(self.producer, records, self.stop_event.is_set)
        return outcome

    def _fact(self, command: Envelope, type_: str, payload: dict) -> Envelope:
        return Envelope(
            type=type_,
            stream_id=command.stream_id,
            tenant_id=command.tenant_id,
            actor=ACTOR,
            causation_id=command.event_id,
            correlation_id=command.event_id,
            event_id=derived_event_id(command.event_id, type_),
            payload=payload,
        )

    @staticmethod
    def _queued(command: Envelope) -> dict[str, Any]:
        return {
            "event_id": command.event_id,
            "occurred_at": command.occurred_at,
            "payload": command.payload,
            "stream_id": command.stream_id,
            "tenant_id": command.tenant_id,
        }

    def _api(self, integration: Integration) -> IssueApi | None:
        if not integration.api_base_url or integration.api_token_sealed is None:
            return None
        try:
            token = integration.api_token(self.box)
        except SecretUnreadable:
            LOG.warning("integration %s: its API token does not decrypt", integration.integration_id)
            return None
        s = self.settings
        return IssueApi(integration, token or "", s.alert_api_timeout_s, self.policy, s.alert_api_trusted_hosts)

    def _enriched(self, integration: Integration, alert: dict) -> tuple[dict, str | None]:
        """The alert with the issue's latest event's stack trace when it carries none (Sentry
        ``issue``, GlitchTip); a note when that was not possible."""
        if alert["frames"]:
            return alert, None
        api = self._api(integration)
        if api is None:
            return alert, "no stack trace: the integration has no API to enrich from"
        try:
            found = rest_event(api.latest_event(alert["alert_id"]))
        except (IssueApiFailed, ValueError) as e:
            return alert, f"no stack trace: enrichment failed ({e})"
        finally:
            api.close()
        return {**alert, **{k: v for k, v in found.items() if not alert.get(k)}}, None

    # -- the tick: queued alerts, outcomes back --------------------------------------------
    def _owned_integrations(self) -> dict[str, int]:
        owned = self.runtime.owned
        rows = self.db.execute("SELECT DISTINCT integration_id FROM alert_issues").fetchall()
        found = {r["integration_id"]: self.runtime.partition(r["integration_id"]) for r in rows}
        return {i: p for i, p in found.items() if p in owned}

    def tick(self) -> None:
        with self.db_lock:
            owned = self._owned_integrations()
            if not owned:
                return
            self._drain(owned)
            self._answer(owned)

    def _drain(self, owned: dict[str, int]) -> None:
        full: set[tuple[str, str]] = set()
        for row in store.queued(self.db, list(owned)):
            q = row["queued_alert"]
            if (row["integration_id"], str(q["payload"].get("project"))) in full:
                continue
            command = Envelope(
                type="alert.receive",
                stream_id=q["stream_id"],
                tenant_id=q["tenant_id"],
                actor=ACTOR,
                payload=q["payload"],
                event_id=q["event_id"],
                occurred_at=q["occurred_at"],
            )
            with self.db.transaction():
                store.lock_partition(self.db, self.consumer, owned[row["integration_id"]])
                if store.issue(self.db, row["integration_id"], row["issue_id"]).queued:
                    outcome = self._decide_queued(command)
                    if outcome is None:
                        full.add((row["integration_id"], str(q["payload"].get("project"))))

    def _decide_queued(self, command: Envelope) -> AlertOutcome | None:
        """Start a queued alert if its window has room now (None: still full, nothing written)."""
        integration = self._integration(command.payload["integration_id"])
        if integration is not None:
            found = integration.route(command.payload.get("project"), command.payload.get("project_id"))
            if found is not None:
                now = time.time_ns() // 1000
                since = now - integration.rate_limit_window_s * 1_000_000
                recent = store.starts(self.db, integration.integration_id, found[0], since)
                if window_full(recent, now, integration.rate_limit_runs, integration.rate_limit_window_s):
                    return None
        return self._decide(command, time.time_ns() // 1000, from_queue=True)

    def _answer(self, owned: dict[str, int]) -> None:
        for row in store.ended_uncommented(self.db, self.settings.projection_schema, tuple(ENDED)):
            if row["integration_id"] not in owned:
                continue
            integration = self._integration(row["integration_id"])
            with self.db.transaction():
                store.lock_partition(self.db, self.consumer, owned[row["integration_id"]])
                status, error = None, None
                api = self._api(integration) if integration else None
                if api is None:
                    error = "no API configured to answer on"
                else:
                    marker = comment_marker(row["run_id"])
                    text = f"{self._outcome_text(row)}\n\n{marker}"
                    try:
                        status = api.comment_once(row["issue_id"], text, marker)
                    except IssueApiFailed as e:
                        error = str(e)
                    finally:
                        api.close()
                payload = {
                    "issue_id": row["issue_id"],
                    "run_id": row["run_id"],
                    "run_state": row["state"],
                    "status": status,
                    "error": error,
                }
                record = Envelope(
                    type="alert.commented",
                    stream_id=row["integration_id"],
                    tenant_id=integration.tenant_id if integration else "platform",
                    actor=ACTOR,
                    event_id=derived_event_id(row["run_id"], "alert.commented"),
                    payload=payload,
                )
                append_durably(self.producer, [record], self.stop_event.is_set)
                store.commented(self.db, row["integration_id"], row["issue_id"], row["run_id"])

    def _outcome_text(self, row: dict) -> str:
        run = row["run_id"]
        if row["state"] == "merged":
            url = store.merge_request_url(self.db, self.settings.projection_schema, run)
            return f"AstraForge remediation run {run} opened a merge request with a proposed fix: {url}"
        why = f": {row['reason']}" if row.get("reason") else ""
        return f"AstraForge remediation run {run} ended {row['state']}{why}"

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until ``stop``: the faust app on its thread, the tick on this one."""
        self.runtime.start()
        try:
            while not self.stop_event.wait(self.tick_s):
                try:
                    self.tick()
                except psycopg.Error:  # the database away for a moment: the next tick retries
                    LOG.exception("alerts tick failed")
                    self._reconnect()
                except Exception:
                    LOG.exception("alerts tick failed")
        finally:
            self.close()

    def close(self) -> None:
        """Release what construction took (``run`` ends with it; one built and never run is closed too)."""
        self.runtime.close()
        with contextlib.suppress(Exception):
            self.producer.close()
        if hasattr(self, "db"):
            with contextlib.suppress(Exception):
                self.db.close()
