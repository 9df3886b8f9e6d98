"""Fixtures every test gets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws_lambda_powertools.utilities.parameters import base as parameters_base


@pytest.fixture(autouse=True)
def fresh_powertools_providers() -> Iterator[None]:
    """Powertools keeps one Parameters provider (and its boto3 client and cache) per process,
    in a dict each provider module imported by reference: empty that very dict around every test,
    so that no test reads secrets through a client another test made for another region."""
    parameters_base.DEFAULT_PROVIDERS.clear()
    yield
    parameters_base.DEFAULT_PROVIDERS.clear()
