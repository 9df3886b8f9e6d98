"""A stand-in for Cognito's hosted UI (/oauth2/authorize, /oauth2/token, /logout) on 127.0.0.1,
for the web page's sign-in tests. A fake because nothing here runs the real one: moto
implements Cognito's API but not its hosted UI, and LocalStack's needs its Pro edition.

It holds the page to what a public client's authorization code flow with PKCE must do (RFC 6749
and 7636): a code is handed out only for the registered client and redirect URI and an S256
code_challenge, and exchanged only once, with that redirect URI and the verifier whose SHA-256
is the challenge; a page that skips PKCE, or sends another verifier, gets no token. The user is
signed in without a form (the hosted UI's own page is not what is tested) and gets the tokens
`mint` makes, e.g. ones the local cloud's JWT authorizer accepts."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit


def s256(verifier: str) -> str:
    """The code_challenge of a code_verifier (RFC 7636's S256)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class HostedUi:
    """See the module docstring. `grants` lists the token requests answered (their grant_type),
    `refused` the reasons of those refused; `expires_in` is what the tokens are said to last."""

    def __init__(
        self, *, client_id: str, redirect_uri: str, mint: Callable[[], str], expires_in: int = 3600
    ) -> None:
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.mint = mint
        self.expires_in = expires_in
        self.grants: list[str] = []
        self.refused: list[str] = []
        self._codes: dict[str, dict[str, str]] = {}
        self._refresh_tokens: set[str] = set()
        hosted_ui = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = dict(parse_qsl(url.query))
                if url.path == "/oauth2/authorize":
                    hosted_ui._authorize(self, query)
                elif url.path == "/logout" and query.get("logout_uri") == hosted_ui.redirect_uri:
                    hosted_ui._redirect(self, hosted_ui.redirect_uri)
                else:
                    hosted_ui._answer(self, 400, {"error": "invalid_request"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                if urlsplit(self.path).path != "/oauth2/token":
                    return hosted_ui._answer(self, 404, {"error": "not_found"})
                hosted_ui._token(self, dict(parse_qsl(body)))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign_in(self) -> dict[str, str]:
        """The page's sign_in settings (config.json) for this stand-in."""
        return {
            "authorize_endpoint": f"{self.url}/oauth2/authorize",
            "token_endpoint": f"{self.url}/oauth2/token",
            "logout_endpoint": f"{self.url}/logout",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": "openid email",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> HostedUi:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _authorize(self, http: BaseHTTPRequestHandler, query: dict[str, str]) -> None:
        checks = {
            "unsupported_response_type": query.get("response_type") == "code",
            "unauthorized_client": query.get("client_id") == self.client_id,
            "redirect_mismatch": query.get("redirect_uri") == self.redirect_uri,
            "PKCE S256 code_challenge missing": query.get("code_challenge_method") == "S256"
            and bool(query.get("code_challenge")),
        }
        problem = next((name for name, passed in checks.items() if not passed), None)
        if problem:  # Cognito shows an error page: the browser goes nowhere
            self.refused.append(problem)
            return self._answer(http, 400, {"error": problem})
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "challenge": query["code_challenge"],
            "redirect_uri": query["redirect_uri"],
        }
        answer = {"code": code, **({"state": query["state"]} if "state" in query else {})}
        self._redirect(http, f"{self.redirect_uri}?{urlencode(answer)}")

    def _token(self, http: BaseHTTPRequestHandler, form: dict[str, str]) -> None:
        grant = form.get("grant_type", "")
        if form.get("client_id") != self.client_id:
            problem: str | None = "invalid_client"
        elif grant == "authorization_code":
            issued = self._codes.pop(form.get("code", ""), None)  # a code is good once
            if issued is None:
                problem = "invalid_grant: unknown or used code"
            elif form.get("redirect_uri") != issued["redirect_uri"]:
                problem = "invalid_grant: redirect_uri"
            elif s256(form.get("code_verifier", "")) != issued["challenge"]:
                problem = "invalid_grant: code_verifier"
            else:
                problem = None
        elif grant == "refresh_token":
            known = form.get("refresh_token") in self._refresh_tokens
            problem = None if known else "invalid_grant: refresh_token"
        else:
            problem = "unsupported_grant_type"
        if problem:
            self.refused.append(problem)
            return self._answer(http, 400, {"error": problem.split(":")[0]})
        self.grants.append(grant)
        tokens = {"id_token": self.mint(), "access_token": self.mint()}
        if grant == "authorization_code":  # as Cognito: a refresh answer carries no new one
            tokens["refresh_token"] = secrets.token_urlsafe(32)
            self._refresh_tokens.add(tokens["refresh_token"])
        self._answer(http, 200, {**tokens, "expires_in": self.expires_in, "token_type": "Bearer"})

    @staticmethod
    def _redirect(http: BaseHTTPRequestHandler, location: str) -> None:
        http.send_response(302)
        http.send_header("location", location)
        http.send_header("content-length", "0")
        http.end_headers()

    @staticmethod
    def _answer(http: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        http.send_response(status)
        http.send_header("content-type", "application/json")
        http.send_header("access-control-allow-origin", "*")  # the page is on another origin
        http.send_header("content-length", str(len(data)))
        http.end_headers()
        http.wfile.write(data)
