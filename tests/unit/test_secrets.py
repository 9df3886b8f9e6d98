"""Secrets are read through Powertools Parameters on boto3's default session, against moto."""

from __future__ import annotations

import json

import boto3
from aws_lambda_powertools.utilities.parameters import base as parameters_base
from moto import mock_aws

from sttpipe.adapters.secrets import read_secret, signing_key_source


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
