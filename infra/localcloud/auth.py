"""Local stand-in for the HttpApi's JWT authorizer: HS256 tokens signed with a local secret.

API Gateway verifies the token (signature, issuer, audience, expiry) before the function runs
and hands the claims over in `requestContext.authorizer.jwt.claims`; the local gateway does the
same with `LocalJwtAuth.verify`, so the API function sees the very event shape it gets on AWS.
Routes whose event says `Auth: {Authorizer: NONE}` in the template stay public, as on AWS.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jwt

from localcloud.template import load_template_document

LOCAL_ISSUER: Final = "https://sttpipe.local/issuer"
LOCAL_AUDIENCE: Final = "sttpipe-local"
TENANT_CLAIM: Final = "tenant_id"


class Unauthorized(Exception):
    """No token, a forged one or an expired one: API Gateway answers 401."""


@dataclass(frozen=True)
class LocalJwtAuth:
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    issuer: str = LOCAL_ISSUER
    audience: str = LOCAL_AUDIENCE

    def mint(
        self,
        tenant_id: str,
        *,
        ttl_s: int = 12 * 3600,
        subject: str | None = None,
        groups: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject or f"user-of-{tenant_id}",
            TENANT_CLAIM: tenant_id,
            "iat": now,
            "exp": now + ttl_s,
        }
        if groups:
            claims["cognito:groups"] = list(groups)
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def verify(self, authorization: str | None) -> dict[str, str]:
        """The claims of a valid `Bearer <jwt>` header, stringified as API Gateway passes them."""
        if not authorization:
            raise Unauthorized("missing Authorization header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header is not 'Bearer <token>'")
        try:
            claims: dict[str, Any] = jwt.decode(
                token.strip(),
                self.secret,
                algorithms=["HS256"],  # never the token's own choice (alg=none, key confusion)
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(str(exc)) from exc
        return {name: _as_api_gateway_passes(value) for name, value in claims.items()}


@dataclass(frozen=True)
class RouteAuth:
    """Which routes the template puts behind its JWT authorizer."""

    protected_apis: frozenset[str] = frozenset()  # HttpApi ids with a DefaultAuthorizer
    public_routes: frozenset[str] = frozenset()  # "GET /openapi.json": `Authorizer: NONE`

    def required(self, api_logical_id: str | None, route_key: str) -> bool:
        return api_logical_id in self.protected_apis and route_key not in self.public_routes

    @classmethod
    def from_template(cls, template_path: Path) -> RouteAuth:
        resources: dict[str, Any] = load_template_document(template_path).get("Resources") or {}
        protected, public = set(), set()
        for logical_id, resource in resources.items():
            props = resource.get("Properties") or {}
            is_api = resource.get("Type") == "AWS::Serverless::HttpApi"
            if is_api and (props.get("Auth") or {}).get("DefaultAuthorizer"):
                protected.add(logical_id)
            for event in (props.get("Events") or {}).values():
                event_props = event.get("Properties") or {}
                authorizer = (event_props.get("Auth") or {}).get("Authorizer")
                if event.get("Type") == "HttpApi" and authorizer == "NONE":
                    method = str(event_props.get("Method", "ANY")).upper()
                    public.add(f"{method} {event_props.get('Path')}")
        return cls(frozenset(protected), frozenset(public))


def _as_api_gateway_passes(value: Any) -> str:
    """HTTP APIs hand JWT claims to the function as strings, a list as "[a b]"."""
    return f"[{' '.join(map(str, value))}]" if isinstance(value, list) else str(value)
