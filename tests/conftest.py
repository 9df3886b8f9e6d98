"""Fixtures every test gets."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.utilities.parameters import base as parameters_base

from localcloud.emulators import LocalStackEmulator


@pytest.fixture(autouse=True)
def fresh_powertools_providers() -> Iterator[None]:
    """Powertools keeps one Parameters provider (and its boto3 client and cache) per process,
    in a dict each provider module imported by reference: empty that very dict around every test,
    so that no test reads secrets through a client another test made for another region."""
    parameters_base.DEFAULT_PROVIDERS.clear()
    yield
    parameters_base.DEFAULT_PROVIDERS.clear()


@pytest.fixture
def moto_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment boto3 needs to talk to moto in process: a region, fake credentials and
    no endpoint override (which would send the calls to a real emulator instead)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(scope="session")
def localstack() -> Iterator[LocalStackEmulator]:
    """One LocalStack on this host for the whole session, started when a test first needs it.

    Missing, it skips the test on a developer's machine but fails it in CI (CI=true), where
    scripts/test has installed it: the LocalStack tests must never pass by not running."""
    emulator = LocalStackEmulator()
    if not emulator.available():
        message = (
            f"LocalStack is not installed at {emulator.venv}; ./scripts/test installs it "
            "(requirements/localstack.txt), or set STT_LOCALSTACK_VENV"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with emulator:
        yield emulator
