"""`stt login`: a user of a deployed stack signs in with its Cognito user pool, and `stt`
commands given that stack's `--api` then send the user's ID token (it carries the tenant).

The password goes to Cognito only (USER_PASSWORD_AUTH, over TLS); a first sign-in with the
temporary password `stt user add` had emailed sets a new one. What is kept is the ID token and
the refresh token, in `~/.config/stt/credentials.json` (mode 0600, one entry per API), and an
expired ID token is refreshed on use. (botocore and PyJWT are imported where they are used:
every `stt` command imports this module.)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def credentials_file() -> Path:
    """$STT_CREDENTIALS_FILE, else ~/.config/stt/credentials.json."""
    default = Path.home() / ".config" / "stt" / "credentials.json"
    return Path(os.environ.get("STT_CREDENTIALS_FILE", default))


REFRESH_AHEAD_S = 60  # a token this close to its expiry is refreshed before it is sent


class SignInFailed(Exception):
    """Why the user is not signed in, in a line."""


@dataclass(frozen=True)
class StackSignIn:
    """What signing in to a stack needs, from its outputs."""

    api_url: str
    client_id: str
    region: str


@dataclass(frozen=True)
class Credentials:
    api_url: str
    client_id: str
    region: str
    username: str
    id_token: str
    refresh_token: str

    @property
    def claims(self) -> dict[str, Any]:
        """The ID token's claims, unverified: API Gateway verifies it; this only reads it."""
        import jwt

        return dict(jwt.decode(self.id_token, options={"verify_signature": False}))


def stack_sign_in(cloudformation: Any, stack_name: str, region: str) -> StackSignIn:
    from botocore.exceptions import ClientError

    from localcloud.users import stack_outputs

    try:
        outputs = stack_outputs(cloudformation, stack_name)
    except ClientError as exc:
        raise SignInFailed(str(exc)) from exc
    if "UserPoolClientId" not in outputs:
        raise SignInFailed(
            f"stack {stack_name} has no user pool (deployed with JwtIssuer: sign in with that "
            "identity provider and pass --token)"
        )
    return StackSignIn(outputs["ApiUrl"].rstrip("/"), outputs["UserPoolClientId"], region)


def sign_in(
    cognito: Any,
    stack: StackSignIn,
    username: str,
    password: str,
    new_password: Callable[[], str],
) -> Credentials:
    """Sign in; `new_password` is asked for when Cognito wants the temporary one replaced."""
    from botocore.exceptions import ClientError

    try:
        answer = cognito.initiate_auth(
            ClientId=stack.client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
        if answer.get("ChallengeName") == "NEW_PASSWORD_REQUIRED":
            answer = cognito.respond_to_auth_challenge(
                ClientId=stack.client_id,
                ChallengeName="NEW_PASSWORD_REQUIRED",
                Session=answer["Session"],
                ChallengeResponses={"USERNAME": username, "NEW_PASSWORD": new_password()},
            )
    except ClientError as exc:  # a wrong password, an unknown user, a weak new password
        raise SignInFailed(exc.response["Error"].get("Message", str(exc))) from exc
    if "AuthenticationResult" not in answer:
        raise SignInFailed(f"Cognito asks for {answer.get('ChallengeName')}, which stt cannot do")
    tokens = answer["AuthenticationResult"]
    return Credentials(
        api_url=stack.api_url,
        client_id=stack.client_id,
        region=stack.region,
        username=username,
        id_token=tokens["IdToken"],
        refresh_token=tokens["RefreshToken"],
    )


class CredentialStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or credentials_file()

    def save(self, credentials: Credentials) -> None:
        entries = self._entries()
        entries[credentials.api_url] = asdict(credentials)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created private, never widened: the refresh token is as good as the password for 30 days.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(entries, file, indent=2)

    def load(self, api_url: str) -> Credentials | None:
        entry = self._entries().get(api_url.rstrip("/"))
        return Credentials(**entry) if entry else None

    def _entries(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        return dict(json.loads(self.path.read_text(encoding="utf-8")))


def id_token(
    store: CredentialStore,
    api_url: str,
    cognito_for: Callable[[str], Any],
    now: Callable[[], float] = time.time,
) -> str | None:
    """The stored ID token for `api_url`, refreshed first if it (nearly) expired; None when
    nobody signed in to it."""
    from botocore.exceptions import ClientError

    credentials = store.load(api_url)
    if credentials is None:
        return None
    if credentials.claims.get("exp", 0) - REFRESH_AHEAD_S > now():
        return credentials.id_token
    try:
        answer = cognito_for(credentials.region).initiate_auth(
            ClientId=credentials.client_id,
            AuthFlow="REFRESH_TOKEN_AUTH",
            AuthParameters={"REFRESH_TOKEN": credentials.refresh_token},
        )
    except ClientError as exc:
        raise SignInFailed(
            f"the sign-in to {api_url} has expired ({exc.response['Error'].get('Message')}): "
            "run stt login again"
        ) from exc
    fresh = answer["AuthenticationResult"]
    renewed = Credentials(
        **{**asdict(credentials), "id_token": fresh["IdToken"]},
    )
    store.save(renewed)
    return renewed.id_token
