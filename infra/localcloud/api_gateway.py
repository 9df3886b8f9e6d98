"""A local stand-in for API Gateway HTTP APIs, like `sam local start-api` without Docker.

It serves the template's HttpApi events on 127.0.0.1: matches the route (method and path with
{params} or a greedy {proxy+}, most specific first), builds the payload format 2.0 event,
invokes the function in the function host and writes its response. CORS preflights are answered
and CORS headers added from the HttpApi's CorsConfiguration, as API Gateway does. With a
`LocalJwtAuth`, every route but the template's `Authorizer: NONE` ones needs a valid bearer token
(401 otherwise) and its claims reach the function as the JWT authorizer's do. The web page
(functions/web/page) is served under /web/, as CloudFront serves it on AWS, with `web_config` as
its config.json when set (on AWS the WebPage custom resource writes one).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import uvicorn
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from localcloud.auth import LocalJwtAuth, RouteAuth, Unauthorized
from localcloud.function_host import FunctionHost, Invocation
from localcloud.template import HttpApiRoute

_TEXT_TYPES: Final = re.compile(
    r"^(text/|application/(json|xml|javascript|x-www-form-urlencoded)|[^;]*\+(json|xml))", re.I
)
_LOCAL_API_ID: Final = "local"
WEB_DIR: Final = Path(__file__).resolve().parents[2] / "functions" / "web" / "page"


@dataclass(frozen=True)
class _Route:
    function_id: str
    route: HttpApiRoute
    pattern: re.Pattern[str] | None  # None for $default

    @property
    def key(self) -> str:
        return "$default" if self.pattern is None else f"{self.route.method} {self.route.path}"

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: API Gateway prefers literal paths, then fewer parameters, greedy last."""
        path = self.route.path
        return (
            self.pattern is None,
            "+}" in path,
            path.count("{"),
            -path.count("/"),
            self.route.method == "ANY",
        )

    def path_parameters(self, path: str) -> dict[str, str] | None:
        """The route's parameters in `path`, or None when the path is not this route's."""
        if self.pattern is None:
            return {}
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}

    def accepts(self, method: str) -> bool:
        return self.route.method in ("ANY", method)


def _compile(path: str) -> re.Pattern[str] | None:
    if path == "$default":
        return None
    parts = []
    for segment in path.strip("/").split("/"):
        param = re.fullmatch(r"\{([A-Za-z0-9_.-]+?)(\+?)\}", segment)
        if param is None:
            parts.append(re.escape(segment))
        else:  # group names must be identifiers; API Gateway allows a few more characters
            name = param.group(1)
            parts.append(f"(?P<{name}>.+)" if param.group(2) else f"(?P<{name}>[^/]+)")
    return re.compile("/" + "/".join(parts))


class ApiGateway:
    """Serves every HttpApi route of the host's functions on http://127.0.0.1:<port>."""

    def __init__(
        self,
        host: FunctionHost,
        *,
        port: int = 0,
        auth: LocalJwtAuth | None = None,
        route_auth: RouteAuth | None = None,
        web_dir: Path | None = WEB_DIR,
    ) -> None:
        self.host = host
        self._port = port
        self.auth = auth
        self._route_auth = route_auth or RouteAuth()
        self._web_dir = web_dir.resolve() if web_dir else None
        # The page's config.json (see functions/web/app.py); None: the page has none.
        self.web_config: dict[str, Any] | None = None
        # Headers sent with the page's files, as CloudFront's response headers policy adds.
        self.web_headers: dict[str, str] = {}
        stack = host.stack
        self._account_id = stack.pseudo.account_id
        self._cors = stack.http_api_cors
        self._routes = sorted(
            (
                _Route(fn.logical_id, route, _compile(route.path))
                for fn in stack.functions.values()
                if fn.logical_id in host.pools
                for route in fn.http_routes
            ),
            key=lambda r: r.specificity,
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        port = self._server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 10.0) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self._port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local API gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> ApiGateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._handle(request)
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        method, path = request.method, _raw_path(request)
        origin = request.headers.get("origin")
        matched = [
            (r, p)
            for r in self._routes
            if r.accepts(method) and (p := r.path_parameters(path)) is not None
        ]
        if (
            method == "OPTIONS"
            and origin
            and "access-control-request-method" in request.headers
            and self._cors_for(path) is not None
        ):
            return Response(status_code=204, headers=self._cors_headers(path, origin, True))
        if not matched:
            return self._static(method, path)
        route, params = matched[0]
        try:
            claims = self._claims(route, request.headers.get("authorization"))
        except Unauthorized:
            # API Gateway says no more than this; the reason stays out of the response.
            response = _json_response(401, {"message": "Unauthorized"})
            response.headers["www-authenticate"] = "Bearer"
        else:
            event = await self._event(request, route, params, claims)
            invocation = await run_in_threadpool(self.host.invoke, route.function_id, event)
            response = _response(invocation)
        if origin:
            response.headers.update(self._cors_headers(path, origin, False))
        return response

    def _claims(self, route: _Route, authorization: str | None) -> dict[str, str] | None:
        if self.auth is None or not self._route_auth.required(
            route.route.api_logical_id, route.key
        ):
            return None
        return self.auth.verify(authorization)

    def _static(self, method: str, path: str) -> Response:
        """The web page's files under /web/, else API Gateway's 404."""
        if self._web_dir is not None and method in ("GET", "HEAD"):
            if path in ("/web", "/"):
                return RedirectResponse("/web/", status_code=302)
            if path.startswith("/web/"):
                name = unquote(path.removeprefix("/web/")) or "index.html"
                if name == "config.json" and self.web_config is not None:
                    return _json_response(200, self.web_config)
                file = (self._web_dir / name).resolve()
                if file.is_relative_to(self._web_dir) and file.is_file():
                    headers = {"cache-control": "no-store", **self.web_headers}
                    return FileResponse(file, headers=headers)
        return _json_response(404, {"message": "Not Found"})

    async def _event(
        self,
        request: Request,
        route: _Route,
        params: dict[str, str],
        claims: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The API Gateway HTTP API payload format version 2.0."""
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        cookie_header = headers.pop("cookie", None)
        query: dict[str, str] = {}
        for name, value in parse_qsl(request.url.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        body = await request.body()
        now = time.time()
        host = headers.get("host", "127.0.0.1")
        client = request.client
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": _raw_path(request),
            "rawQueryString": request.url.query,
            "headers": headers,
            "requestContext": {
                "accountId": self._account_id,
                "apiId": _LOCAL_API_ID,
                "domainName": host,
                "domainPrefix": host.split(".")[0],
                "http": {
                    "method": request.method,
                    "path": _raw_path(request),
                    "protocol": f"HTTP/{request.scope.get('http_version', '1.1')}",
                    "sourceIp": client.host if client else "127.0.0.1",
                    "userAgent": headers.get("user-agent", ""),
                },
                "requestId": str(uuid.uuid4()),
                "routeKey": route.key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if claims is not None:
            event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
        if cookie_header:
            event["cookies"] = [c.strip() for c in cookie_header.split(";") if c.strip()]
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        if body:
            if _TEXT_TYPES.match(headers.get("content-type", "text/plain")):
                event["body"] = body.decode("utf-8", errors="replace")
            else:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
        return event

    # -- CORS

    def _cors_for(self, path: str) -> dict[str, Any] | None:
        """The CorsConfiguration of the API a path belongs to (the first API if none matches)."""
        routes = [r for r in self._routes if r.path_parameters(path) is not None] or self._routes
        return self._cors.get(routes[0].route.api_logical_id) if routes else None

    def _cors_headers(self, path: str, origin: str, preflight: bool) -> dict[str, str]:
        config = self._cors_for(path)
        if not config:
            return {}
        origins = [o.lower() for o in config.get("AllowOrigins") or []]
        credentials = bool(config.get("AllowCredentials"))
        if "*" not in origins and origin.lower() not in origins:
            return {}
        headers = {
            "access-control-allow-origin": "*" if "*" in origins and not credentials else origin
        }
        if credentials:
            headers["access-control-allow-credentials"] = "true"
        if preflight:
            optional = {
                "access-control-allow-methods": ",".join(config.get("AllowMethods") or []),
                "access-control-allow-headers": ",".join(config.get("AllowHeaders") or []),
                "access-control-max-age": str(config.get("MaxAge", "")),
            }
        else:
            optional = {
                "access-control-expose-headers": ",".join(config.get("ExposeHeaders") or [])
            }
        headers.update({k: v for k, v in optional.items() if v})
        return headers


def _raw_path(request: Request) -> str:
    """The path as the client sent it (percent-encoded), as API Gateway passes it on."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    return raw.decode("latin-1")


def _json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _response(invocation: Invocation) -> Response:
    """The HTTP response API Gateway makes of a payload 2.0 function result."""
    if invocation.outcome == "timeout":
        return _json_response(503, {"message": "Service Unavailable"})
    if invocation.outcome == "error":
        return _json_response(500, {"message": "Internal Server Error"})
    result = invocation.result
    if not (isinstance(result, dict) and "statusCode" in result):
        # Without a statusCode the result itself is the JSON body.
        body = result if isinstance(result, str) else json.dumps(result)
        return Response(body, status_code=200, media_type="application/json")
    raw = result.get("body") or ""
    content = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
    response = Response(content, status_code=int(result["statusCode"]))
    for name, value in (result.get("headers") or {}).items():
        response.headers[name] = str(value)
    for cookie in result.get("cookies") or []:
        response.headers.append("set-cookie", cookie)
    return response
