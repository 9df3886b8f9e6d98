"""`stt user add` on moto's Cognito and CloudFormation (in process): an operator adds a tenant's
user to a deployed stack's user pool, with its tenant and rights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from localcloud import cli
from localcloud.users import UserNotAdded, add_user, user_pool_of


@pytest.fixture
def aws(moto_env: None) -> Iterator[None]:
    with mock_aws():
        yield


def deployed_pool(stack_name: str = "stt") -> str:
    """A user pool as the template makes it, and a stack whose UserPoolId output names it."""
    cognito = boto3.client("cognito-idp")
    pool = cognito.create_user_pool(
        PoolName="stt-users",
        Schema=[{"Name": "tenant_id", "AttributeDataType": "String", "Mutable": True}],
    )["UserPool"]["Id"]
    for group in ("operators", "priority"):
        cognito.create_group(UserPoolId=pool, GroupName=group)
    template = {
        "Parameters": {"Pool": {"Type": "String"}},
        "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
        "Outputs": {"UserPoolId": {"Value": {"Ref": "Pool"}}},
    }
    boto3.client("cloudformation").create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": "Pool", "ParameterValue": pool}],
    )
    return pool


def attributes(pool: str, email: str) -> dict[str, Any]:
    user = boto3.client("cognito-idp").admin_get_user(UserPoolId=pool, Username=email)
    return {a["Name"]: a["Value"] for a in user["UserAttributes"]}


def test_stt_user_add_creates_the_tenants_user_with_its_rights(aws: None) -> None:
    pool = deployed_pool()
    argv = ["user", "add", "ana@example.com", "--tenant", "acme", "--stack", "stt", "--priority"]
    assert cli.main(argv) == cli.EXIT_OK

    assert attributes(pool, "ana@example.com")["custom:tenant_id"] == "acme"
    groups = boto3.client("cognito-idp").admin_list_groups_for_user(
        UserPoolId=pool, Username="ana@example.com"
    )["Groups"]
    assert [g["GroupName"] for g in groups] == ["priority"]


@pytest.mark.parametrize("tenant", ["", "a b", "../other", "x" * 65, "-lead"])
def test_a_tenant_id_that_could_name_something_else_is_refused(aws: None, tenant: str) -> None:
    pool = deployed_pool()
    with pytest.raises(UserNotAdded, match="tenant id"):
        add_user(boto3.client("cognito-idp"), pool, "bob@example.com", tenant)


def test_a_missing_stack_or_pool_is_one_line(aws: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserNotAdded):
        user_pool_of(boto3.client("cloudformation"), "no-such-stack")
    assert cli.main(["user", "add", "c@example.com", "--tenant", "t", "--stack", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stt: ") and "Traceback" not in err
