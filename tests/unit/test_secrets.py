"""Secrets are read through Powertools Parameters on boto3's default session, against moto."""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools.utilities.parameters import base as parameters_base
from moto import mock_aws
from psycopg.conninfo import conninfo_to_dict

from sttpipe.adapters.database import conninfo_from_settings
from sttpipe.adapters.secrets import read_secret, signing_key_source
from sttpipe.config import Settings


def test_a_secret_is_read_with_the_data_boto3s_default_session_loaded(moto_env: None) -> None:
    """Each botocore session loads botocore's endpoint data and models again (~8 MB in every
    function): the secrets client must share the loader, and its cache, with the others."""
    with mock_aws():
        client = boto3.client("secretsmanager")
        client.create_secret(Name="db", SecretString=json.dumps({"host": "h"}))
        client.create_secret(Name="hooks", SecretString="signing key")
        assert read_secret("db", transform="json") == {"host": "h"}
        assert signing_key_source("hooks", None)() == "signing key"
        default = boto3._get_default_session()._session  # moto forgets it when it stops
        provider = parameters_base.DEFAULT_PROVIDERS["secrets"]
        assert provider.client._loader is default.get_component("data_loader")


def test_the_stacks_own_database_is_reached_through_its_proxy(moto_env: None) -> None:
    """The secret RDS manages for the created database holds only the user and password; the
    template gives the proxy's host and the database's name beside it."""
    settings = Settings(
        database_secret_id="rds!cluster-demo",
        database_host="demo-db.proxy-abc.us-east-1.rds.amazonaws.com",
        database_name="sttpipe",
    )
    with mock_aws():
        boto3.client("secretsmanager").create_secret(
            Name="rds!cluster-demo",
            SecretString=json.dumps({"username": "sttpipe", "password": "p@ss word"}),
        )
        conninfo = conninfo_from_settings(settings)
        assert callable(conninfo)
        params = conninfo_to_dict(conninfo())
    assert params == {
        "host": "demo-db.proxy-abc.us-east-1.rds.amazonaws.com",
        "port": "5432",
        "user": "sttpipe",
        "password": "p@ss word",
        "dbname": "sttpipe",
        "sslmode": "require",  # the proxy requires TLS
    }
