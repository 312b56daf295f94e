"""The layer every MLflow server of the project runs behind (the team stack, `make server`, `make ui`):
an ASGI app around MLflow's own, registered the documented way, as MLflow apps (entry points `mlflow.app`
in pyproject.toml):

    mlflow server --app-name linclass        MLflow's app behind the guard (no logins: make server, make ui)
    mlflow server --app-name linclass-team   MLflow's basic-auth app behind the guard (the team stack)

For every client, admins included, it
- refuses (403) the routes that run commands on the server's host or change the server's configuration
  (REFUSED below): MLflow's AI assistant (its Bash tool runs on the host; its config is the server account's
  ~/.mlflow), jobs and the GenAI "invoke" routes that start them, scorer registration, the AI gateway and its
  proxy (stored provider secrets, requests to any URL), webhooks (requests to any URL), the MCP server
  registry, demo data, workspace changes;
- refuses experiments/create with an artifact_location: artifacts live under the server's artifact root;
- answers 400, not 500, to a body that is not a JSON object or does not fit the endpoint's protobuf
  message, and to a malformed GraphQL request;
- takes database text (SQL statements, driver messages) out of error answers; the server's log keeps it;
- with LINCLASS_SERVER_TOKEN set (`make server`): answers only requests that carry that token, as a bearer token
  (MLflow's clients send MLFLOW_TRACKING_TOKEN so) or as the password of a browser's login (any user name);
  others get 401, but for GET /health (liveness, no data);
- with LINCLASS_OWNER_ONLY=1 (`make ui`, the UI of the project's own store): answers only connections from
  processes of the account it runs as (the owner of the client's socket, read from the kernel's socket table);
  any other local account gets 403 instead of reading, changing and deleting the project's runs;
- refuses (403) a request that names an Origin other than the server's own, or the public URL's behind a proxy
  (LINCLASS_PUBLIC_URL): a page of another origin in the owner's or a teammate's browser, which keeps the token
  or the login (MLflow lets every localhost port's pages read and write);
- with logins (linclass-team): throttles wrong passwords per user name and per client address
  (throttle.py: 429 past the limit, without checking the password), and answers every wrong password, and
  every throttled attempt, after the same time (`floor`), whether the user exists or not.
It also switches off the AI gateway (MLFLOW_ENABLE_AI_GATEWAY=false: the UI hides its pages) and answers the
UI's request for its endpoints with an empty list (GATEWAY_LIST), as MLflow does without one. The UI's
assistant button cannot be hidden from the server in MLflow 3.17 (the page shows it on localhost); on this
server every assistant call it makes is refused.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import os
import posixpath
import re
import secrets
import time
from collections.abc import Collection
from urllib.parse import urlsplit

import psutil
from google.protobuf.json_format import ParseDict, ParseError
from google.protobuf.message import Message

from linclass.orchestration.accounts import socket_owner
from linclass.orchestration.throttle import Throttle

_logger = logging.getLogger(__name__)

# Matched against the request path with `//` and dot segments resolved, and as sent (MLflow routes that one), both
# without MLflow's static prefix.
REFUSED = re.compile(r"""^(?:
      /(?:ajax-)?api/[^/]+/mlflow/(?:assistant|gateway|gateway-proxy|webhooks|mcp-servers|demo|jobs
          |prompt-optimization|scorer/invoke|scorers/register|scorers/online-config|genai/evaluate/invoke
          |issues/invoke)
    | /ajax-api/[^/]+/jobs
    | /gateway
    )(?:/|$)""", re.X | re.I)
# The UI asks for the AI gateway's endpoints on every page load and shows a refusal as an error: answered here
# as MLflow answers it when no gateway is configured, an empty list, without proxying anything.
GATEWAY_LIST = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/gateway-proxy$", re.I)
NO_ENDPOINTS = b'{"endpoints": []}'
WORKSPACES = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/workspaces(?:/|$)", re.I)
API = re.compile(r"^/(?:ajax-)?api/", re.I)
BINARY_BODIES = re.compile(r"/mlflow-artifacts/|/mlflow/upload-artifact$", re.I)
CREATE_EXPERIMENT = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/experiments/create$", re.I)
# MLflow's tracing (GenAI traces; the project logs none), read-only: a trace names where the server reads its files
# (its tag mlflow.artifactLocation, which MLflow lets a client set through the tag routes, the v2 end-trace route
# and OTLP span attributes: a folder of the user's, with a file swapped for a link between MLflow's check of the
# path and its read, and get-trace-artifact served secrets.env), and OTLP and start-trace v3 write into, or move,
# a trace of another experiment by its id. Every request that writes traces is refused; the reads stay.
TRACE_WRITES = re.compile(r"^/(?:v1/traces|(?:ajax-)?api/[^/]+/mlflow/traces)(?:/|$)", re.I)
TRACE_READS = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/traces/(?:search|batchGetInfos|calculate-filter-correlation"
                         r"|metrics)$", re.I)
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# A model version's source: the server reads it with its own credentials (MLflow checks runs:/, models:/ and
# mlflow-artifacts: against the request, and takes any s3:// as it is: another teammate's artifacts in the bucket).
CREATE_MODEL_VERSION = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/model-versions/create$", re.I)
MODEL_SOURCE = re.compile(r"^(?:runs:/|models:/|mlflow-artifacts:/(?!/))")
# Every page's scripts come from the server itself: a `javascript:` link a teammate stored (a run's mlflow.source.name,
# which the UI turns into its Source link) or any inline script does not run in another teammate's browser.
POLICY = b"script-src 'self' 'unsafe-eval'; worker-src 'self' blob:; object-src 'none'; base-uri 'self'"
# The one route that reads a form (MLflow's sign-up page posts one): every other body of an API route is checked
# as JSON, whatever its Content-Type says (MLflow's handlers read a body as JSON when the header starts so).
SIGN_UP = re.compile(r"^/(?:ajax-)?api/[^/]+/mlflow/users/create-ui$", re.I)
FORMS = {"application/x-www-form-urlencoded", "multipart/form-data"}
# Headers the guard decides on, or that say how long the body is: sent twice, the guard would read one (the last)
# where MLflow reads another (Starlette's first) or both joined by ", " (its WSGI bridge: a second Content-Type
# "application/json;x=1" then "multipart/form-data" read as JSON by MLflow, as a form by the guard). Refused.
SINGLE_HEADERS = ("content-type", "content-length", "transfer-encoding", "host", "origin")
MAX_BODY = 64 * 2**20
# What database drivers and SQLAlchemy put in exception texts that MLflow passes on to clients.
DATABASE_TEXT = re.compile(r"\[SQL:|\((?:psycopg2?|sqlite3|pymysql|pyodbc|sqlalchemy)[.)]|\bsqlalchemy\.|\bpsycopg2?\."
                           r"|Background on this error|\bDETAIL:\s|\bLINE \d+:", re.I)
# A unique key violated: sqlite, PostgreSQL, MySQL. Said as such: a client tries again (tracking.records).
UNIQUE_KEY = re.compile(r"UNIQUE constraint failed|UniqueViolation|duplicate key value|Duplicate entry", re.I)


def route_path(path: str, prefix: str = "") -> str:
    """The route a path reaches: repeated slashes merged, `.` and `..` resolved, the static prefix removed."""
    path = posixpath.normpath(re.sub(r"/{2,}", "/", "/" + path))
    if prefix and (path == prefix or path.startswith(prefix + "/")):
        path = path[len(prefix):] or "/"
    return path


def refused(path: str, method: str, sent: str) -> str | None:
    """Why the route is refused, or None: `path` as route_path resolves it, or `sent`, the path as the client sent it
    (the static prefix removed), which is what MLflow routes: a path parameter of `..` climbs out of a refused
    prefix only once resolved (/gateway/../mlflow/invocations reaches /gateway/{endpoint_name}/mlflow/invocations)."""
    for p in (path, sent):
        if REFUSED.match(p) or (method != "GET" and WORKSPACES.match(p)):
            return "it would run commands on the server's host or change the server's configuration"
        if method not in ("GET", "HEAD") and TRACE_WRITES.match(p) and not TRACE_READS.match(p):
            return "MLflow's traces are read-only here (the project logs none; a trace names where the server reads)"
    return None


def scrub(message: str) -> str:
    """`message` without database text: what comes before it, or a line saying what kind of failure it was
    (the exception's class name OperationalError, which clients read as "the database is not reachable"; a
    unique key, which a client that wrote the same new row as another at the same moment tries again on)."""
    found = DATABASE_TEXT.search(message)
    if not found:
        return message
    head = re.sub(r"(?:[\s.:;,(]|\b(?:Error|Exception)\b)*$", "", message[:found.start()])
    if "OperationalError" in message:
        tail = "OperationalError: the server's database is not reachable or not working; its log has the details."
        return f"{head}. {tail}" if head else tail
    if head:
        return f"{head}."
    if UNIQUE_KEY.search(message):
        return ("A unique key refused the request: another request wrote the same row at the same moment (try "
                "again); the server's log has the details.")
    return "The database refused the request; the server's log has the details."


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, read as liberally as any of MLflow's parsers reads one
    (werkzeug's, for its Flask routes, splits the scheme off at a space; MLflow's own, for its FastAPI routes
    such as /v1/traces, at any whitespace), else None."""
    parts = (header or "").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(parts[1], validate=False).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def with_credentials(headers: list[tuple[bytes, bytes]], credentials: tuple[str, str] | None) -> list:
    """`headers` without any Authorization header, plus one canonical one for `credentials` (user, password):
    MLflow reads exactly the credentials that the throttle counted, or none (not, say, the first of two headers
    where the guard read the last, or a form one of its parsers misreads)."""
    kept = [(k, v) for k, v in headers if k.lower() != b"authorization"]
    if credentials is None:
        return kept
    return kept + [(b"authorization", b"Basic " + base64.b64encode(":".join(credentials).encode("latin-1")))]


def proto_routes(prefix: str = "") -> list[tuple[re.Pattern, frozenset[str], type[Message]]]:
    """(path regex, methods, request message) of MLflow's protobuf endpoints (the artifact ones excepted)."""
    from mlflow.server.handlers import get_endpoints

    routes = []
    for path, request_class, methods in get_endpoints(get_handler=lambda message_class: message_class):
        if not (isinstance(request_class, type) and issubclass(request_class, Message)) or BINARY_BODIES.search(path):
            continue
        path = route_path(path, prefix)
        parts = re.split(r"<([^>]+)>", path)   # literal, parameter, literal, ...
        regex = "".join(re.escape(part) if i % 2 == 0 else (".+" if part.startswith("path:") else "[^/]+")
                        for i, part in enumerate(parts))
        routes.append((re.compile(f"^{regex}$"), frozenset(methods), request_class))
    return routes


def body_problem(body: bytes, message_class: type[Message] | None, create_experiment: bool,
                 create_model_version: bool = False) -> str | None:
    """Why a JSON body is refused (one line), or None."""
    if not body.strip():
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return "the request body is not valid JSON"
    if isinstance(value, str):   # MLflow accepts a JSON object sent as a JSON string (older clients)
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return "the request body must be a JSON object, not a string"
    if value is None:
        return None
    if not isinstance(value, dict):
        return f"the request body must be a JSON object, not a {type(value).__name__}"
    if create_experiment and (value.get("artifact_location") or value.get("artifactLocation")):
        return ("artifact_location is not accepted: this server keeps every experiment's artifacts under its "
                "own artifact root; leave it out")
    if create_model_version and not MODEL_SOURCE.match(str(value.get("source", ""))):
        return (f"the model version's source {str(value.get('source', ''))[:200]!r} is not accepted: give runs:/, "
                "models:/ or mlflow-artifacts:/ (this server's own artifacts)")
    if message_class is not None:
        try:
            ParseDict(value, message_class(), ignore_unknown_fields=True)
        except (ParseError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            return f"the request body does not fit {message_class.DESCRIPTOR.name}: {str(exc)[:300]}"
    return None


def graphql_problem(method: str, body: bytes) -> str | None:
    from graphql import GraphQLError, parse

    if method != "POST":
        return "send GraphQL requests as POST with a JSON body {\"query\": ..., \"variables\": {...}}"
    try:
        value = json.loads(body or b"null")
    except (ValueError, RecursionError):
        return "the GraphQL request is not valid JSON"
    if not isinstance(value, dict) or not isinstance(value.get("query"), str):
        return "a GraphQL request is a JSON object with a string \"query\""
    if not isinstance(value.get("variables"), (dict, type(None))):
        return "GraphQL \"variables\" must be a JSON object"
    if not isinstance(value.get("operationName"), (str, type(None))):
        return "GraphQL \"operationName\" must be a string"
    try:
        parse(value["query"])
    except (GraphQLError, RecursionError) as exc:
        return f"GraphQL query: {str(exc).splitlines()[0][:300]}"
    return None


def refusal_floor() -> float:
    """How long every wrong-password answer takes: well above one password check on this machine."""
    from werkzeug.security import check_password_hash, generate_password_hash

    stored = generate_password_hash(secrets.token_urlsafe(16))
    start = time.perf_counter()
    check_password_hash(stored, "not-the-password")
    return max(0.5, 5 * (time.perf_counter() - start))


async def answer(send, status: int, code: str, message: str, headers: list | None = None,
                 body: bytes | None = None) -> None:
    body = body or json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive) -> bytes | None:
    """The whole request body, None past MAX_BODY."""
    body = bytearray()
    while (message := await receive())["type"] == "http.request":
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            return None
        if not message.get("more_body"):
            break
    return bytes(body)


def with_policy(send):
    """`send` with the Content-Security-Policy (POLICY) on every answer."""
    async def sending(message):
        if message["type"] == "http.response.start":
            kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"]
            message = {**message, "headers": [*kept, (b"content-security-policy", POLICY)]}
        await send(message)
    return sending


def replaying(body: bytes, receive):
    """`receive` that gives the body read (read_body) once more, then what comes after it."""
    unsent = [{"type": "http.request", "body": body, "more_body": False}]

    async def again():
        return unsent.pop() if unsent else await receive()
    return again


def scrubbing(send, graphql: bool, where: str):
    """`send` that takes database text out of error answers (and GraphQL errors), logging the original."""
    held: dict = {}
    chunks: list[bytes] = []

    async def wrapped(message):
        if message["type"] == "http.response.start":
            if message["status"] >= 400 or graphql:
                held.update(message)
                return
        elif message["type"] == "http.response.body" and held:
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            clean = scrub_body(b"".join(chunks), held["status"], where)
            headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
            await send({**held, "headers": [*headers, (b"content-length", str(len(clean)).encode())]})
            await send({"type": "http.response.body", "body": clean})
            return
        await send(message)
    return wrapped


def scrub_body(body: bytes, status: int, where: str) -> bytes:
    text = body.decode("utf-8", errors="replace")
    if not DATABASE_TEXT.search(text):
        return body
    _logger.warning("database text taken out of the %d answer to %s: %s", status, where, text[:4000])
    try:
        value = json.loads(text)
    except ValueError:
        return scrub(text).encode()
    if isinstance(value, dict):
        for key in ("message", "detail", "error"):
            if isinstance(value.get(key), str):
                value[key] = scrub(value[key])
        if isinstance(value.get("errors"), list):
            value["errors"] = [scrub(e) if isinstance(e, str) else e for e in value["errors"]]
    text = json.dumps(value)
    return (text if not DATABASE_TEXT.search(text) else json.dumps(
        {"error_code": "INTERNAL_ERROR", "message": scrub(text)})).encode()


def peer_uid(client: tuple[str, int] | None, server: tuple[str, int] | None) -> int | None:
    """The uid of the process whose TCP socket is the other end of this connection to a server on this machine
    (None: unknown, or a process this user cannot see, so another account's). The whole connection is matched,
    both ends' addresses and ports: a socket of the owner's from the same local address and port to a server on the
    same port at another address is another connection."""
    if not client or not server:
        return None
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.raddr and (conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port) == tuple(client) \
                and (conn.raddr.ip.removeprefix("::ffff:"), conn.raddr.port) == tuple(server):
            return socket_owner(conn)
    return None


def foreign_origin(headers: dict[str, str], own: Collection[str] = ()) -> str | None:
    """The Origin a request names when it is not the server's own (the Host it was sent to, which MLflow checks
    against --allowed-hosts, or one of `own`, host[:port] as a proxy's public URL names it), else None (none
    named: not a browser's cross-origin request). A browser names the
    page's origin on every cross-origin fetch, and on its own pages' requests but GET and HEAD. MLflow (3.17) lets
    a page on any port of localhost read its answers and write, credentials included, whatever
    --cors-allowed-origins says: another local account's page, opened in the owner's browser, would pass the
    owner-only check (the browser is the owner's process) and send the login the browser keeps."""
    origin = headers.get("origin")
    if origin is None:
        return None
    host, netloc = headers.get("host", "").lower(), urlsplit(origin).netloc.lower()
    return None if netloc and (netloc == host or netloc in own) else origin


def carries_token(header: str | None, token: str) -> bool:
    """True when an Authorization header carries `token`: `Bearer <token>`, or Basic with it as the password."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() == "basic":
        value = (basic_credentials(header) or ("", ""))[1]
    elif scheme.lower() != "bearer":
        return False
    return secrets.compare_digest(value.strip().encode(), token.encode())


class Guard:
    """ASGI app: the checks above, then MLflow's `app`."""

    def __init__(self, app, logins: bool):
        from mlflow.server.handlers import STATIC_PREFIX_ENV_VAR

        self.app, self.prefix = app, os.environ.get(STATIC_PREFIX_ENV_VAR, "").rstrip("/")
        self.routes = proto_routes(self.prefix)
        self.throttle = Throttle() if logins else None
        self.floor = refusal_floor() if logins else 0.0
        self.in_flight: dict[bytes, asyncio.Event] = {}
        self.owner_only = os.environ.get("LINCLASS_OWNER_ONLY") == "1"
        self.token = os.environ.get("LINCLASS_SERVER_TOKEN") or None
        self.origins = {urlsplit(url).netloc.lower() for url in [os.environ.get("LINCLASS_PUBLIC_URL", "")] if url}
        # the route that answers without the token, as MLflow matches it: the path as sent, not route_path's
        # (GET /api/2.0/mlflow-artifacts/artifacts/x/../../../../../health resolves to /health, and reached MLflow)
        self.health = {"/health", f"{self.prefix}/health"}
        if logins:
            from mlflow.server.auth import is_unprotected_route
            self.unprotected = is_unprotected_route

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":   # MLflow's own
            return await self.app(scope, receive, send)
        if scope["type"] != "http":   # a websocket (MLflow serves none): refused before any check could be missed
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        send = with_policy(send)
        path, method = route_path(scope["path"], self.prefix), scope["method"].upper()
        sent = scope["path"][len(self.prefix):] if self.prefix and scope["path"].startswith(self.prefix + "/") \
            else scope["path"]
        if self.owner_only and await asyncio.to_thread(peer_uid, scope.get("client"),   # ms: not in the event loop
                                                       scope.get("server")) != os.getuid():
            return await answer(send, 403, "PERMISSION_DENIED", f"this server answers only the processes of uid "
                                f"{os.getuid()}, the account it runs as")
        names = [k.decode("latin-1").lower() for k, _ in scope.get("headers", [])]
        if twice := [name for name in SINGLE_HEADERS if names.count(name) > 1]:
            return await answer(send, 400, "INVALID_PARAMETER_VALUE", f"the {twice[0]} header is sent more than "
                                "once: send it once")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token and not (method == "GET" and scope["path"] in self.health) \
                and not carries_token(headers.get("authorization"), self.token):
            return await answer(send, 401, "UNAUTHENTICATED", "this server answers only requests with its token: "
                                "set MLFLOW_TRACKING_TOKEN (a browser: any user name, the token as password)",
                                [(b"www-authenticate", b'Basic realm="linclass"')])
        if (origin := foreign_origin(headers, self.origins)) is not None:
            return await answer(send, 403, "PERMISSION_DENIED", f"this server answers no page of another origin "
                                f"({origin[:100]}): open its own pages")
        credentials = basic_credentials(headers.get("authorization"))
        # MLflow sees the credentials the throttle counts, or none (its FastAPI routes read the first of several
        # Authorization headers, where `headers` kept the last)
        scope = {**scope, "headers": with_credentials(scope.get("headers", []), credentials)}
        login_needed = self.throttle is not None and not self.unprotected(scope["path"])
        if method == "GET" and GATEWAY_LIST.match(path) and not (login_needed and credentials is None):
            return await answer(send, 200, "", "", body=NO_ENDPOINTS)   # constant: no password is checked
        if login_needed and credentials is None:
            # no credentials: MLflow answers 401 everywhere (refused routes too) before reading any body
            if refused(path, method, sent):
                return await answer(send, 401, "UNAUTHENTICATED", "You are not authenticated.",
                                    [(b"www-authenticate", b'Basic realm="mlflow"')])
            return await self.app(scope, receive, send)
        if why := refused(path, method, sent):
            return await answer(send, 403, "PERMISSION_DENIED",
                                f"{method} {path} is switched off on this server: {why}")
        if login_needed:
            return await self.logging_in(scope, receive, send, path, method, headers, credentials)
        return await self.checked(scope, receive, send, path, method, headers)

    async def checked(self, scope, receive, send, path, method, headers):
        """Body checks, then MLflow, with database text taken out of the answer."""
        content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        graphql = path == "/graphql"
        if graphql or (method in BODY_METHODS and API.match(path) and not BINARY_BODIES.search(path)
                       and not (content_type in FORMS and SIGN_UP.match(path))):
            body = await read_body(receive)
            if body is None:
                return await answer(send, 413, "INVALID_PARAMETER_VALUE", f"request body over {MAX_BODY} bytes")
            if graphql:
                problem = graphql_problem(method, body)
            else:
                message_class = next((cls for regex, methods, cls in self.routes
                                      if method in methods and regex.match(path)), None)
                problem = body_problem(body, message_class, bool(CREATE_EXPERIMENT.match(path)),
                                       bool(CREATE_MODEL_VERSION.match(path)))
            if problem:
                return await answer(send, 400, "INVALID_PARAMETER_VALUE", problem)
            receive = replaying(body, receive)
        await self.app(scope, receive, scrubbing(send, graphql, f"{method} {path}"))

    async def logging_in(self, scope, receive, send, path, method, headers, credentials):
        """A request with a user name and password: throttled, and a wrong password answered after `floor`."""
        user, password = credentials
        address = (scope.get("client") or ("unknown",))[0]
        digest = self.throttle.digest(user, password)
        while (pending := self.in_flight.get(digest)) is not None:   # the same credentials: await their verdict
            await pending.wait()
        counted = not self.throttle.known_good(digest)
        if counted:
            wait = self.throttle.retry_after(user, address)
            if wait:   # after the same time as a wrong password: a flood gets no faster by being refused
                await asyncio.sleep(self.floor)
                return await answer(send, 429, "REQUEST_LIMIT_EXCEEDED",
                                    f"too many wrong passwords for this user or from this address; retry in "
                                    f"{math.ceil(wait)} s", [(b"retry-after", str(math.ceil(wait)).encode())])
            self.throttle.begin(user, address)
            self.in_flight[digest] = asyncio.Event()
        loop = asyncio.get_running_loop()
        start, status = loop.time(), []

        async def padded(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                if message["status"] == 401:   # the same time whether the user exists or not
                    await asyncio.sleep(max(0.0, start + self.floor - loop.time()))
            await send(message)
        try:
            await self.checked(scope, receive, padded, path, method, headers)
        finally:
            verdict = None if not status or status[0] in (400, 413) else status[0] != 401
            self.throttle.end(user, address, digest, verdict, counted)
            if counted:
                self.in_flight.pop(digest).set()


def _switch_off_gateway() -> None:
    os.environ["MLFLOW_ENABLE_AI_GATEWAY"] = "false"        # the UI hides its gateway pages
    os.environ["MLFLOW_ENABLE_REMOTE_ASSISTANT"] = "false"  # MLflow's default, kept


def create_app():
    """Entry point `linclass`: MLflow's app (no logins) behind the guard."""
    _switch_off_gateway()
    from mlflow.server.fastapi_app import app

    return Guard(app, logins=False)


def create_team_app():
    """Entry point `linclass-team`: MLflow's basic-auth app behind the guard, with the password throttle."""
    _switch_off_gateway()
    from mlflow.server.auth import create_app as basic_auth_app

    app = basic_auth_app()
    if hasattr(app, "wsgi_app"):   # the Flask app: MLflow builds its ASGI app only under uvicorn
        raise RuntimeError("the linclass-team app runs under uvicorn (mlflow server's default): "
                           "drop --gunicorn-opts / --waitress-opts")
    return Guard(app, logins=True)
