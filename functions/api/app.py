"""HTTP API: create an upload (a pre-signed POST form), follow a job, list jobs."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.bootstrap import job_service
from sttpipe.services.jobs import JobStatusView, RequestRejected, UploadRequest, UploadTicket

logger = Logger()
tracer = Tracer()
app = APIGatewayHttpResolver(enable_validation=True)

# Until the JWT authorizer arrives every caller is one tenant.
DEFAULT_TENANT = "default"


@app.post("/uploads")
@tracer.capture_method
def create_upload(request: Annotated[UploadRequest, Body()]) -> Response[UploadTicket]:
    ticket = job_service().create_upload(request, DEFAULT_TENANT)
    logger.info("upload issued", extra={"job_id": ticket.job_id})
    return Response(status_code=201, body=ticket, content_type="application/json")


@app.get("/jobs/<job_id>")
@tracer.capture_method
def get_job(job_id: str) -> JobStatusView:
    view = job_service().status(job_id, DEFAULT_TENANT)
    if view is None:
        raise NotFoundError(f"job {job_id} not found")
    return view


@app.get("/jobs")
@tracer.capture_method
def list_jobs(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[str | None, Query()] = None,
) -> dict[str, Any]:
    jobs = job_service().list_jobs(DEFAULT_TENANT, limit=limit, before=before)
    return {
        "jobs": [j.model_dump(mode="json") for j in jobs],
        "next": jobs[-1].job_id if len(jobs) == limit else None,
    }


@app.exception_handler(RequestRejected)
def rejected(exc: RequestRejected) -> Response[dict[str, str]]:
    return Response(status_code=400, body={"message": str(exc)}, content_type="application/json")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
