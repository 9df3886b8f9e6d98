"""A deployed stack's users (its Cognito user pool): an operator adds a tenant's user.

The pool only lets operators create users (AllowAdminCreateUserOnly), and users cannot change
their own `custom:tenant_id`: the tenant a user works in is set here, once. Cognito emails the
user a temporary password, changed at the first sign-in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

# What a tenant id may be: it names cache scopes, keys and log lines.
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class UserNotAdded(Exception):
    """Why the user could not be added, in a line for the operator."""


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """A deployed stack's outputs by key; raises botocore's ClientError (no such stack, no
    rights)."""
    (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    return {o["OutputKey"]: str(o["OutputValue"]) for o in stack.get("Outputs", [])}


def user_pool_of(cloudformation: Any, stack_name: str) -> str:
    """The stack's user pool id (its UserPoolId output)."""
    try:
        outputs = stack_outputs(cloudformation, stack_name)
    except ClientError as exc:  # no such stack, no rights
        raise UserNotAdded(str(exc)) from exc
    if "UserPoolId" in outputs:
        return outputs["UserPoolId"]
    raise UserNotAdded(
        f"stack {stack_name} has no user pool (it was deployed with JwtIssuer: its identity "
        "provider holds the users)"
    )


def add_user(
    cognito: Any, user_pool_id: str, email: str, tenant_id: str, groups: Sequence[str] = ()
) -> None:
    """Create `email`'s user in `tenant_id`, a member of `groups` (operators, priority)."""
    if not TENANT_ID.fullmatch(tenant_id):
        raise UserNotAdded(
            f"tenant id {tenant_id!r}: 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    try:
        _create(cognito, user_pool_id, email, tenant_id, groups)
    except ClientError as exc:  # an existing user, a missing group, no rights: said by AWS
        raise UserNotAdded(str(exc)) from exc


def _create(
    cognito: Any, user_pool_id: str, email: str, tenant_id: str, groups: Sequence[str]
) -> None:
    cognito.admin_create_user(
        UserPoolId=user_pool_id,
        Username=email,
        UserAttributes=[
            {"Name": "email", "Value": email},
            {"Name": "email_verified", "Value": "true"},
            {"Name": "custom:tenant_id", "Value": tenant_id},
        ],
        DesiredDeliveryMediums=["EMAIL"],
    )
    for group in groups:
        cognito.admin_add_user_to_group(UserPoolId=user_pool_id, Username=email, GroupName=group)
