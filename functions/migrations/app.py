"""DatabaseSchema custom resource: at each deploy that brings new migrations (its SchemaVersion
changes) CloudFormation asks, the job database is migrated (sttpipe.adapters.migrations) and the
answer PUT back. Deleting the stack leaves the database as it is: its data outlives the stack."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import (
    CloudFormationCustomResourceEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from sttpipe.adapters.cloudformation import answer_custom_resource
from sttpipe.adapters.database import conninfo_from_settings
from sttpipe.adapters.migrations import latest_version, migrate
from sttpipe.config import get_settings

logger = Logger()
# One database per stack: the same id on every update, so CloudFormation never "replaces" it.
PHYSICAL_ID = "sttpipe-database-schema"


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=CloudFormationCustomResourceEvent)
def handler(event: CloudFormationCustomResourceEvent, context: LambdaContext) -> None:
    try:
        if event.request_type == "Delete":
            reason = "the database and its schema are kept"
        else:
            conninfo = conninfo_from_settings(get_settings())
            applied = migrate(conninfo if isinstance(conninfo, str) else conninfo())
            reason = f"applied migrations {applied}" if applied else "the schema was up to date"
    except Exception as exc:
        logger.exception("the database could not be migrated")
        answer_custom_resource(
            event.raw_event,
            succeeded=False,
            physical_id=PHYSICAL_ID,
            reason=f"the database could not be migrated: {type(exc).__name__}: {exc}",
        )
        return
    logger.info(reason, extra={"request": event.request_type})
    data = {"Version": str(latest_version())}
    answer_custom_resource(
        event.raw_event, succeeded=True, physical_id=PHYSICAL_ID, reason=reason, data=data
    )
