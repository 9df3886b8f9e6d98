"""DatabaseSchema custom resource: at each deploy that brings new migrations (its SchemaVersion
changes) CloudFormation asks, the job database is migrated (sttpipe.adapters.migrations) and the
answer PUT back. Deleting the stack leaves the database as it is: its data outlives the stack."""

from __future__ import annotations

import psycopg
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import (
    CloudFormationCustomResourceEvent,
    event_source,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from sttpipe.adapters.cloudformation import Outcome, answer_after
from sttpipe.adapters.database import conninfo_from_settings
from sttpipe.adapters.migrations import latest_version, migrate
from sttpipe.config import Settings, get_settings

logger = Logger()
# One database per stack: the same id on every update, so CloudFormation never "replaces" it.
PHYSICAL_ID = "sttpipe-database-schema"


def migrate_when_reachable(settings: Settings) -> list[int]:
    """Migrate, trying again while the database cannot be reached, for up to
    `settings.migration_wait_s`: on a stack's first deploy the RDS Proxy's target may still be
    registering when CloudFormation asks."""
    conninfo = conninfo_from_settings(settings)
    retrying = Retrying(
        retry=retry_if_exception_type(psycopg.OperationalError),
        stop=stop_after_delay(settings.migration_wait_s),
        wait=wait_exponential(multiplier=1, max=15),
        before_sleep=lambda state: logger.info(
            "the database cannot be reached yet", extra={"attempt": state.attempt_number}
        ),
        reraise=True,
    )
    return retrying(lambda: migrate(conninfo if isinstance(conninfo, str) else conninfo()))


@logger.inject_lambda_context(clear_state=True)
@event_source(data_class=CloudFormationCustomResourceEvent)
def handler(event: CloudFormationCustomResourceEvent, context: LambdaContext) -> None:
    def work() -> Outcome:
        data = {"Version": str(latest_version())}
        if event.request_type == "Delete":
            return "the database and its schema are kept", data
        applied = migrate_when_reachable(get_settings())
        return (f"applied migrations {applied}" if applied else "the schema was up to date"), data

    answer_after(
        event.raw_event, work, physical_id=PHYSICAL_ID, failure="the database could not be migrated"
    )
