"""HTTP API: uploads (pre-signed POST forms), job status and downloads, re-runs of failed
chunks, job deletion, and the operators' queue and cache endpoints. The tenant is taken from the
JWT authorizer's claims."""

import json
import sys
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import (
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from sttpipe.bootstrap import job_service, prepare
from sttpipe.config import get_settings
from sttpipe.domain.models import Priority, WebhookKey
from sttpipe.observability import TRACED_AWS
from sttpipe.services.jobs import (
    FeatureUnavailable,
    JobBusy,
    JobStatusView,
    NothingToCancel,
    NothingToRerun,
    RequestRejected,
    UploadRequest,
    UploadTicket,
)
from sttpipe.services.webhook_keys import IssuedSecret

logger = Logger()
tracer = Tracer(patch_modules=TRACED_AWS)
app = APIGatewayHttpResolver(enable_validation=True)
prepare(job_service)

# Claims that name the tenant, first found wins: Cognito's custom attribute (ID tokens), a
# generic issuer's claim. Never `sub`: a token that names no tenant (a Cognito access token
# carries no custom attributes) must not make its user a tenant of its own.
TENANT_CLAIMS = ("custom:tenant_id", "tenant_id")
# Fleet-wide actions need this group (Cognito's cognito:groups claim; another issuer must send
# the same claim). API Gateway passes a list claim as "[a b]".
OPERATORS_GROUP = "operators"
GROUPS_CLAIM = "cognito:groups"
JOB_ID = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The job id from /uploads.")]
OPENAPI_INFO: dict[str, Any] = {
    "title": "sttpipe",
    "version": "1.0.0",
    "description": "Serverless speech-to-text batch pipeline: upload a recording with a "
    "pre-signed POST, follow its job, download TXT/JSON/SRT/VTT transcripts.",
    "security_schemes": {"jwt": HTTPBearer(bearerFormat="JWT")},
    "security": [{"jwt": []}],
}


class JobPage(BaseModel):
    jobs: list[dict[str, Any]]
    next: str | None = Field(description="Pass as `before` for the next page; null on the last.")


class CacheInvalidation(BaseModel):
    model: str | None = Field(default=None, min_length=1, max_length=200)
    pipeline_version: str | None = Field(default=None, min_length=1, max_length=64)


def tenant() -> str:
    """The caller's tenant; API Gateway has already verified the token."""
    claims = app.current_event.request_context.authorizer.jwt_claim or {}
    for name in TENANT_CLAIMS:
        if claims.get(name):
            return str(claims[name])
    raise UnauthorizedError(
        "the token names no tenant: send an ID token with custom:tenant_id (or tenant_id)"
    )


def groups() -> set[str]:
    """The caller's groups (API Gateway passes a list claim as "[a b]")."""
    claims = app.current_event.request_context.authorizer.jwt_claim or {}
    return set(str(claims.get(GROUPS_CLAIM, "")).strip("[]").split())


def require_operator() -> None:
    if OPERATORS_GROUP not in groups():
        raise ForbiddenError(f"only members of the {OPERATORS_GROUP!r} group may do this")


def require_priority_right(priority: Priority | None) -> None:
    """High priority is served before every other job: a right the token grants (its group),
    not a choice, or one tenant could starve the others."""
    group = get_settings().high_priority_group
    if priority is Priority.HIGH and not groups() & {group, OPERATORS_GROUP}:
        raise ForbiddenError(f"priority 'high' is for members of the {group!r} group")


@app.post("/uploads")
@tracer.capture_method
def create_upload(request: Annotated[UploadRequest, Body()]) -> Response[UploadTicket]:
    owner = tenant()
    require_priority_right(request.priority)
    ticket = job_service().create_upload(request, owner)
    logger.info("upload issued", extra={"job_id": ticket.job_id})
    return Response(status_code=201, body=ticket, content_type="application/json")


@app.get("/jobs/<job_id>")
@tracer.capture_method
def get_job(job_id: JOB_ID) -> JobStatusView:
    view = job_service().status(job_id, tenant())
    if view is None:
        raise NotFoundError(f"job {job_id} not found")
    return view


@app.post(
    "/jobs/<job_id>/rerun",
    status_code=202,
    description="Transcribe again the chunks of a PARTIAL or FAILED job that did not finish; "
    "its new transcript combines them with the chunks that did. 409 while the job runs, when "
    "it has nothing to re-run (COMPLETED) or when its upload was rejected (upload it again).",
)
@tracer.capture_method
def rerun_job(job_id: JOB_ID) -> JobStatusView:
    view = job_service().rerun(job_id, tenant())
    if view is None:
        raise NotFoundError(f"job {job_id} not found")
    logger.info("job re-run", extra={"job_id": job_id, "run": view.runs})
    return view


@app.post(
    "/jobs/<job_id>/cancel",
    description="End a job that has not ended: its execution is stopped, so that no chunk still "
    "queued is sent to the speech API, and it ends FAILED ('cancelled by its owner'); the "
    "chunks done so far are kept for a re-run. 409 when it has ended already.",
)
@tracer.capture_method
def cancel_job(job_id: JOB_ID) -> JobStatusView:
    view = job_service().cancel(job_id, tenant())
    if view is None:
        raise NotFoundError(f"job {job_id} not found")
    logger.info("job cancelled", extra={"job_id": job_id})
    return view


@app.delete("/jobs/<job_id>")
@tracer.capture_method
def delete_job(job_id: JOB_ID) -> dict[str, int]:
    deleted = job_service().delete(job_id, tenant())
    if deleted is None:
        raise NotFoundError(f"job {job_id} not found")
    logger.info("job deleted", extra={"job_id": job_id, **deleted})
    return deleted


@app.get("/jobs")
@tracer.capture_method
def list_jobs(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query(pattern=r"^[0-9a-f]{32}$")] = None,
) -> JobPage:
    jobs = job_service().list_jobs(tenant(), limit=limit, before=before)
    return JobPage(
        jobs=[j.model_dump(mode="json", exclude={"webhook_url"}) for j in jobs],
        next=jobs[-1].job_id if len(jobs) == limit else None,
    )


@app.post(
    "/webhook-secret",
    status_code=201,
    description="A new webhook signing secret for the caller's tenant, shown in this answer "
    "only. Deliveries are signed by the previous secret too for a day, so that receivers "
    "can switch over.",
)
@tracer.capture_method
def rotate_webhook_secret() -> Response[IssuedSecret]:
    owner = tenant()
    issued = job_service().webhook_secrets().rotate(owner)
    logger.info("webhook secret rotated", extra={"generation": issued.generation})
    return Response(status_code=201, body=issued, content_type="application/json")


@app.get("/webhook-secret", description="Which secret is current (never the secret itself).")
@tracer.capture_method
def describe_webhook_secret() -> WebhookKey:
    key = job_service().webhook_secrets().describe(tenant())
    if key is None:
        raise NotFoundError("no webhook secret yet: POST /webhook-secret makes one")
    return key


@app.get("/stats/queues")
@tracer.capture_method
def queue_stats() -> dict[str, dict[str, int]]:
    tenant()
    require_operator()  # the fleet's load, every tenant's work included
    return job_service().queue_depths()


@app.get("/stats/cache")
@tracer.capture_method
def cache_stats() -> dict[str, Any]:
    tenant()
    require_operator()
    return job_service().cache_admin().stats()


@app.post("/cache/invalidations")
@tracer.capture_method
def invalidate_cache(request: Annotated[CacheInvalidation, Body()]) -> dict[str, int]:
    tenant()
    require_operator()  # it drops every tenant's entries of that model or version
    if request.model is None and request.pipeline_version is None:
        raise RequestRejected("name a model, a pipeline_version or both")
    removed = (
        job_service()
        .cache_admin()
        .invalidate(model=request.model, pipeline_version=request.pipeline_version)
    )
    return {"entries_deleted": removed}


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> Response[str]:
    return Response(status_code=200, body=openapi_json(), content_type="application/json")


def openapi_json() -> str:
    """The committed docs/openapi.json is this, reformatted (see tests/unit/test_api.py)."""
    document = json.loads(app.get_openapi_json_schema(**OPENAPI_INFO))
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def _error(status: int, exc: Exception) -> Response[dict[str, str]]:
    return Response(status_code=status, body={"message": str(exc)}, content_type="application/json")


@app.exception_handler(RequestValidationError)
def invalid(exc: RequestValidationError) -> Response[dict[str, Any]]:
    """422 naming each field and what is wrong with it (Powertools' default omits the why)."""
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]), "message": str(e.get("msg", e["type"]))}
        for e in exc.errors()
    ]
    message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Response(
        status_code=422,
        body={"message": message, "errors": errors},
        content_type="application/json",
    )


@app.exception_handler(RequestRejected)
def rejected(exc: RequestRejected) -> Response[dict[str, str]]:
    return _error(400, exc)


@app.exception_handler([JobBusy, NothingToRerun, NothingToCancel])
def conflict(exc: JobBusy | NothingToRerun | NothingToCancel) -> Response[dict[str, str]]:
    return _error(409, exc)


@app.exception_handler(FeatureUnavailable)
def unavailable(exc: FeatureUnavailable) -> Response[dict[str, str]]:
    return _error(501, exc)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


if __name__ == "__main__":  # regenerate docs/openapi.json: python functions/api/app.py
    sys.stdout.write(openapi_json())
