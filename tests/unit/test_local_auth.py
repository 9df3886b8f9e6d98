"""The local API gateway's token check: what it accepts and the claims it passes on."""

from __future__ import annotations

import pytest

from localcloud.auth import LocalJwtAuth, Unauthorized


def test_claims_arrive_as_api_gateway_passes_them() -> None:
    auth = LocalJwtAuth()
    claims = auth.verify(f"Bearer {auth.mint('acme', groups=('operators', 'readers'))}")
    assert claims["tenant_id"] == "acme"
    assert claims["cognito:groups"] == "[operators readers]"
    assert "cognito:groups" not in auth.verify(f"Bearer {auth.mint('acme')}")


@pytest.mark.parametrize(
    "header",
    [None, "Basic abc", "Bearer ", "Bearer not-a-jwt"],
)
def test_malformed_headers_are_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        LocalJwtAuth().verify(header)


def test_tokens_of_another_secret_or_expired_are_refused() -> None:
    auth, other = LocalJwtAuth(), LocalJwtAuth()
    with pytest.raises(Unauthorized):
        auth.verify(f"Bearer {other.mint('acme')}")
    with pytest.raises(Unauthorized, match="expired"):
        auth.verify(f"Bearer {auth.mint('acme', ttl_s=-60)}")
