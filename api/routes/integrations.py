"""Integrations: create, list, show and delete a tenant's Sentry/GlitchTip connections.

They are control data (like API keys), written to the ``integrations`` table, not records: their
secrets must never reach Kafka. A secret is accepted once (the Sentry client secret) or generated
once (the GlitchTip webhook path) and never shown again; the API token is never shown at all.
"""

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from astraforge import integrations as store
from astraforge.api.deps import AppSettings, Conn, CurrentTenant
from astraforge.api.errors import ApiError
from astraforge.api.models import ErrorBody, IntegrationCreate, IntegrationPublic, IntegrationsPublic, ProjectRouteIn
from astraforge.api.params import After, IntegrationId
from astraforge.ids import iso
from astraforge.integrations import Integration, ProjectRoute
from astraforge.processors.runs.guardrails import repository_allowed
from astraforge.secretbox import SecretBox

router = APIRouter(tags=["integrations"])
ERRORS = {401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


def public(integration: Integration, path_secret: str | None = None) -> IntegrationPublic:
    if integration.kind == "sentry":
        path = f"/v1/webhooks/sentry/{integration.integration_id}"
    else:
        path = f"/v1/webhooks/glitchtip/{path_secret}" if path_secret else None
    return IntegrationPublic(
        id=integration.integration_id,
        kind=integration.kind,
        name=integration.name,
        webhook_path=path,
        api_base_url=integration.api_base_url,
        has_api_token=integration.api_token_sealed is not None,
        organization=integration.organization,
        projects={
            k: ProjectRouteIn(repository=v.repository, base_branch=v.base_branch or "main")
            for k, v in integration.projects.items()
        },
        agent=integration.agent,
        test_command=integration.test_command,
        writable_paths=integration.writable_paths,
        rate_limit_runs=integration.rate_limit_runs,
        rate_limit_window_s=integration.rate_limit_window_s,
        created_at=iso(integration.created_at),
    )


@router.post(
    "/v1/integrations",
    status_code=201,
    response_model=IntegrationPublic,
    operation_id="createIntegration",
    responses=ERRORS,
)
async def create_integration(
    body: IntegrationCreate, request: Request, tenant: CurrentTenant, conn: Conn, settings: AppSettings
) -> IntegrationPublic:
    """Create an integration; the answer's ``webhook_path`` is where the alerts go (for GlitchTip it
    holds the generated secret: this is the only time it is shown)."""
    if body.agent == "cli":  # as for POST /v1/requests
        raise ApiError(422, "agent cli is not available in this release (use `script` or `codex`)")
    if body.agent == "codex" and settings.agent_model_upstream not in settings.egress_platform_upstreams:
        upstream = settings.agent_model_upstream
        raise ApiError(422, f"agent codex needs the model gateway: the platform upstream {upstream} is not configured")
    for name, route in body.projects.items():
        if not repository_allowed(settings.repo_allowlist, tenant, route.repository):
            raise ApiError(
                403,
                f"project {name}: repository {route.repository} is not on the tenant's allowlist",
                code="repository_not_allowed",
            )
    box: SecretBox = request.app.state.secretbox
    integration_id = store.new_integration_id()
    path_secret = store.new_path_secret() if body.kind == "glitchtip" else None
    secret = body.client_secret or path_secret or ""
    integration = Integration(
        integration_id=integration_id,
        tenant_id=tenant,
        kind=body.kind,
        name=body.name,
        api_base_url=body.api_base_url.rstrip("/") if body.api_base_url else None,
        organization=body.organization,
        projects={k: ProjectRoute(v.repository, v.base_branch) for k, v in body.projects.items()},
        agent=body.agent,
        steps=[step.record() for step in body.steps],
        test_command=body.test_command,
        writable_paths=body.writable_paths,
        rate_limit_runs=body.rate_limit_runs,
        rate_limit_window_s=body.rate_limit_window_s,
        secret_sealed=box.seal(secret, f"{integration_id}:secret"),
        api_token_sealed=box.seal(body.api_token, f"{integration_id}:api_token") if body.api_token else None,
    )
    row = await (await conn.execute(store.INSERT, store.to_row(integration, path_secret))).fetchone()
    return public(replace(integration, created_at=row["created_at"]), path_secret)


@router.get("/v1/integrations", response_model=IntegrationsPublic, operation_id="listIntegrations", responses=ERRORS)
async def list_integrations(
    tenant: CurrentTenant, conn: Conn, after: After = "", limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> IntegrationsPublic:
    rows = await (await conn.execute(store.SELECT_PAGE, (tenant, after, limit))).fetchall()
    items = [public(store.from_row(r)) for r in rows]
    return IntegrationsPublic(items=items, next_after=items[-1].id if len(items) == limit else None)


@router.get(
    "/v1/integrations/{integration_id}",
    response_model=IntegrationPublic,
    operation_id="getIntegration",
    responses=ERRORS,
)
async def get_integration(integration_id: IntegrationId, tenant: CurrentTenant, conn: Conn) -> IntegrationPublic:
    row = await (await conn.execute(store.SELECT_OWNED, (integration_id, tenant))).fetchone()
    if row is None:
        raise ApiError(404, f"integration {integration_id} not found")
    return public(store.from_row(row))


@router.delete("/v1/integrations/{integration_id}", status_code=204, operation_id="deleteIntegration", responses=ERRORS)
async def delete_integration(integration_id: IntegrationId, tenant: CurrentTenant, conn: Conn) -> Response:
    """Delete it: its webhooks answer 401 from now on and its secrets are erased (its records stay)."""
    row = await (await conn.execute(store.DELETE, (integration_id, tenant))).fetchone()
    if row is None:
        raise ApiError(404, f"integration {integration_id} not found")
    return Response(status_code=204)
