"""stt login against moto's Cognito and CloudFormation (in process): a user `stt user add`
created signs in, replaces the temporary password, and later commands get a refreshed token."""

from __future__ import annotations

import dataclasses
import io
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from localcloud import cli
from localcloud.login import Credentials, CredentialStore, SignInFailed, id_token
from localcloud.users import add_user
from tests.unit.test_template import _CfnLoader

ROOT = Path(__file__).resolve().parents[2]
API_URL = "https://abc123.execute-api.us-east-1.amazonaws.com"


def template_auth_flows() -> list[str]:
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_CfnLoader)
    return list(template["Resources"]["UserPoolClient"]["Properties"]["ExplicitAuthFlows"])


@pytest.fixture
def stack(moto_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A deployed stack's pool and app client as template.yaml declares them, and its outputs."""
    monkeypatch.setenv("STT_CREDENTIALS_FILE", str(tmp_path / "stt" / "credentials.json"))
    with mock_aws():
        cognito = boto3.client("cognito-idp")
        pool = cognito.create_user_pool(
            PoolName="stt",
            Schema=[{"Name": "tenant_id", "AttributeDataType": "String", "Mutable": False}],
        )["UserPool"]["Id"]
        client_id = cognito.create_user_pool_client(
            UserPoolId=pool, ClientName="stt", ExplicitAuthFlows=template_auth_flows()
        )["UserPoolClient"]["ClientId"]
        outputs = {"ApiUrl": API_URL, "UserPoolClientId": client_id}
        boto3.client("cloudformation").create_stack(
            StackName="stt",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()},
                }
            ),
        )
        add_user(cognito, pool, "ana@example.com", "acme")
        cognito.admin_set_user_password(
            UserPoolId=pool, Username="ana@example.com", Password="Temp#Pass1", Permanent=False
        )
        yield cognito


def login(monkeypatch: pytest.MonkeyPatch, *lines: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    argv = ["login", "--stack", "stt", "--region", "us-east-1", "--username", "ana@example.com"]
    return cli.main([*argv, "--password-stdin"])


def test_the_app_client_allows_the_flow_stt_login_uses() -> None:
    assert {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"} <= set(template_auth_flows())


def test_a_first_sign_in_sets_a_new_password_and_keeps_the_tenants_token_privately(
    stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(monkeypatch, "Temp#Pass1", "New#Pass123") == cli.EXIT_OK
    assert "as ana@example.com (tenant acme)" in capsys.readouterr().err
    store = CredentialStore()
    credentials = store.load(API_URL)
    assert credentials is not None and credentials.claims["custom:tenant_id"] == "acme"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    # The new password is the one now: signing in again asks for no other.
    assert login(monkeypatch, "New#Pass123") == cli.EXIT_OK


def test_a_wrong_password_is_one_line(
    stack: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert login(monkeypatch, "not-it") == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("stt: ") and err.count("\n") == 1 and "Traceback" not in err


def first_sign_in(monkeypatch: pytest.MonkeyPatch) -> tuple[CredentialStore, Credentials]:
    assert login(monkeypatch, "Temp#Pass1", "New#Pass123") == cli.EXIT_OK
    store = CredentialStore()
    signed_in = store.load(API_URL)
    assert signed_in is not None
    return store, signed_in


def test_an_expired_token_is_refreshed_and_kept(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, signed_in = first_sign_in(monkeypatch)
    expires = signed_in.claims["exp"]

    assert id_token(store, API_URL, lambda _: stack, now=lambda: expires - 3600) == (
        signed_in.id_token
    )
    fresh = id_token(store, API_URL, lambda _: stack, now=lambda: expires + 1)
    assert fresh is not None and fresh != signed_in.id_token
    kept = store.load(API_URL)
    assert kept is not None and kept.id_token == fresh
    assert id_token(store, "https://another.example.com", lambda _: stack) is None


def test_a_refresh_token_cognito_refuses_asks_for_a_new_sign_in(
    stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, signed_in = first_sign_in(monkeypatch)
    store.save(dataclasses.replace(signed_in, refresh_token="revoked"))
    with pytest.raises(SignInFailed, match="run stt login again"):
        id_token(store, API_URL, lambda _: stack, now=lambda: signed_in.claims["exp"] + 1)
