"""The team stack attacked the way a teammate with a login and no grants, or a second local account, would
(issue: no command execution through MLflow's assistant, artifacts confined, files private, logins throttled).

Each attack also runs against a plain MLflow server of the same version (the control, started as `nobody`,
without the guard) where it succeeds: the attack is real, and the stack is what refuses it.
Clients that must count as different addresses connect from 127.0.0.6-9 (all loopback).
"""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import test_stack
from conftest import BIN, MLFLOW_SERVER_ENV, ROOT, free_port, serving
from test_stack import Stack, services

pytestmark = pytest.mark.slow
s3_server = test_stack.s3_server   # a fixture: moto's S3 server with the bucket linclass-team

if os.geteuid() != 0:
    pytest.skip("the attacks of a second local account need root (runuser, setpriv)", allow_module_level=True)

ASSISTANT = "/ajax-api/3.0/mlflow/assistant"
SQL_MARKERS = ("[SQL:", "INSERT INTO", "psycopg2", "sqlite3.", "sqlalche.me", "UniqueViolation")


def call(url: str, path: str, method: str = "GET", body=None, auth: tuple[str, str] | None = None,
         source: str | None = None, timeout: float = 60, headers: dict | None = None) -> tuple[int, dict, str, float]:
    """One HTTP request from loopback address `source` (`headers` added): (status, headers, body text, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout,
                                      source_address=(source, 0) if source else None)
    headers = {"Content-Type": "application/json", **(headers or {})}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    start = time.perf_counter()
    try:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        try:
            text = response.read().decode(errors="replace")
        except http.client.IncompleteRead as exc:   # a file swapped between the server's stat and its read
            text = exc.partial.decode(errors="replace")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, text, time.perf_counter() - start
    finally:
        conn.close()


# ---- a stand-in for an OpenAI-compatible chat endpoint: it asks the assistant to run one command ----

class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):   # Ollama's model list
        self._json({"models": [{"model": "stand-in"}]})

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.chats.append(request)
        if any(m.get("role") == "tool" for m in request.get("messages", [])):
            frames = [{"choices": [{"delta": {"content": "done"}, "finish_reason": "stop"}]}]
        else:
            command = json.dumps({"command": f"touch {self.server.marker}"})
            frames = [{"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call-1", "type": "function",
                                                              "function": {"name": "Bash", "arguments": command}}]},
                                    "finish_reason": None}]},
                      {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for frame in frames:
            self.wfile.write(f"data: {json.dumps(frame)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _json(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def base():
    # every account must pass through it (the stack's and nobody): not under pytest's private temp root
    folder = Path(tempfile.mkdtemp(prefix="linclass-attacks-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def chat(base):
    """The stand-in on 127.0.0.1, and the marker file its command would create (in a folder anyone may write)."""
    markers = Path(tempfile.mkdtemp(dir=base))
    markers.chmod(0o1777)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.chats, server.marker = [], markers / "assistant-ran-this"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def assistant_attack(url: str, chat, auth=None) -> list[int]:
    """Point the assistant at the stand-in, send a message, read the answer: the statuses of the three calls."""
    config = {"providers": {"ollama": {"base_url": f"http://127.0.0.1:{chat.server_port}", "model": "stand-in",
                                       "selected": True, "permissions": {"full_access": True}}}}
    status_config, *_ = call(url, f"{ASSISTANT}/config", "PUT", config, auth)
    status_message, _, text, _ = call(url, f"{ASSISTANT}/message", "POST", {"message": "hello"}, auth)
    stream = json.loads(text).get("stream_url", f"{ASSISTANT}/sessions/none/stream") if status_message == 200 \
        else f"{ASSISTANT}/sessions/00000000-0000-0000-0000-000000000000/stream"
    status_stream, *_ = call(url, stream, "GET", None, auth)
    return [status_config, status_message, status_stream]


# ---- the control: MLflow's own server, no guard, run as nobody ----

@pytest.fixture(scope="module")
def control(base):
    from linclass.orchestration.accounts import Account
    from linclass.orchestration.services import server_python

    folder = base / "control"
    folder.mkdir(mode=0o700)
    nobody = pwd.getpwnam("nobody")
    os.chown(folder, nobody.pw_uid, nobody.pw_gid)
    account = Account("nobody", nobody.pw_uid, nobody.pw_gid, str(folder))
    python, python_env = server_python(account, folder)
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [python, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
           "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    # TMPDIR: the assistant keeps its chats in $TMPDIR/mlflow-assistant-sessions (not left behind in /tmp)
    env = {**account.env(), **python_env, **MLFLOW_SERVER_ENV, "TMPDIR": str(folder)}
    with serving(cmd, url, base / "control.log", cwd=folder, env=env, **account.popen_args()):
        yield url


@pytest.fixture(scope="module")
def stack(base):
    folder = base / "services"
    env = {**os.environ, "LINCLASS_SERVICES_DIR": str(folder), "LINCLASS_MLFLOW_PORT": str(free_port()),
           "LINCLASS_PG_PORT": str(free_port()), "CALLERS_OWN_SECRET": "not for the server"}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING_")}
    start = time.monotonic()
    up = services(env, "up")
    try:
        stack = Stack(folder, env, up, time.monotonic() - start)
        for name in ("bob", "carol", "dave", "erin"):
            add_user(stack, name)
        yield stack
    finally:
        services(env, "down", check=False)


def add_user(stack: Stack, name: str) -> None:
    """A teammate's account, as `services add-user NAME` makes it, made in this process (a `services` process costs
    a second of CPU; the command itself: tests/test_stack.py, and test_a_link_the_stacks_account_planted_... here)."""
    from linclass.orchestration.services import add_user

    assert add_user(stack.folder, name)[1], f"{name} existed already"


def login(stack: Stack, name: str) -> tuple[str, str]:
    if name == "admin":
        return name, stack.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"]
    return name, stack.user(name)["MLFLOW_TRACKING_PASSWORD"]


# ---- command execution through MLflow's assistant ----

def test_the_assistant_runs_a_command_on_a_plain_mlflow_server(control, chat):
    statuses = assistant_attack(control, chat)
    assert statuses == [200, 200, 200], statuses
    assert len(chat.chats) == 2 and chat.marker.exists(), "the control's assistant ran the stand-in's command"


@pytest.mark.parametrize("who", ["bob", "admin"])
def test_the_stack_refuses_the_assistant_to_every_user(stack, chat, who):
    statuses = assistant_attack(stack.url, chat, login(stack, who))
    assert statuses == [403, 403, 403], statuses
    for path in ("//ajax-api/3.0/mlflow/assistant/config", "/ajax-api/3.0/mlflow/./assistant/config",
                 "/ajax-api/3.0/mlflow/%61ssistant/config", "/ajax-api/3.0/mlflow/x/../assistant/config",
                 f"{ASSISTANT}/providers", f"{ASSISTANT}/skills/install"):
        status, *_ = call(stack.url, path, "PUT" if path.endswith("config") else "GET", {}, login(stack, who))
        assert status == 403, (path, status)
    assert call(stack.url, f"{ASSISTANT}/config")[0] == 401, "anonymous: 401 as everywhere"
    assert chat.chats == [] and not chat.marker.exists(), "the assistant never called the stand-in"
    home = Path(pwd.getpwnam("linclass-stack").pw_dir)
    assert not (home / ".mlflow" / "assistant" / "config.json").exists(), "no assistant config was written"


def test_the_stack_answers_no_page_of_another_origin(stack):
    # A teammate's browser keeps the stack's login (basic auth) and sends it with a page's fetch() calls; MLflow lets
    # every localhost origin read its answers and write, credentials included: a page that another account serves
    # on another port of this machine would read and change the teammate's runs through that browser.
    import base64

    from linclass.orchestration.guard import foreign_origin

    auth = "Authorization: Basic " + base64.b64encode(":".join(login(stack, "bob")).encode()).decode()
    host = stack.url.removeprefix("http://")
    for origin, status in (("http://127.0.0.1:8000", 403), (f"http://localhost:{host.split(':')[1]}", 403),
                           ("null", 403), (stack.url, 200), (None, 200)):
        headers = [f"Host: {host}", auth, *([f"Origin: {origin}"] if origin else [])]
        assert raw_status(stack.url, "GET", SEARCH, headers) == status, origin
        assert raw_status(stack.url, "POST", "/api/2.0/mlflow/experiments/create",
                          [*headers, "Content-Type: application/json", "Content-Length: 0"]) in \
            ((403,) if status == 403 else (400,)), origin   # 400: the empty body, read by MLflow's own handler
    # behind a TLS proxy (LINCLASS_PUBLIC_URL), the pages' origin is the public URL's, whatever Host it sends on
    public = {"host": "127.0.0.1:5000", "origin": "https://mlflow.example.org"}
    assert foreign_origin(public) == "https://mlflow.example.org"
    assert foreign_origin(public, {"mlflow.example.org"}) is None
    assert foreign_origin({**public, "origin": "https://evil.example.org"}, {"mlflow.example.org"}) is not None


def test_the_other_routes_that_run_commands_or_reconfigure_the_server_are_refused(stack):
    bob, admin = login(stack, "bob"), login(stack, "admin")
    routes = [("POST", "/ajax-api/3.0/jobs/", {"job_name": "x", "params": {}}),
              ("POST", "/ajax-api/3.0/mlflow/gateway/secrets/create", {"secret_name": "s", "secret_value": "v"}),
              ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/list", None),
              ("POST", "/gateway/proxy/e/chat/completions", {}),
              ("POST", "/ajax-api/2.0/mlflow/gateway-proxy", {"gateway_path": "api/2.0/endpoints/x", "json_data": {}}),
              ("POST", "/api/2.0/mlflow/webhooks", {"name": "w", "url": "http://127.0.0.1:9/x", "events": []}),
              ("POST", "/api/3.0/mlflow/scorers/register", {"experiment_id": "0", "name": "s"}),
              ("POST", "/ajax-api/3.0/mlflow/scorer/invoke", {}),
              ("POST", "/ajax-api/3.0/mlflow/mcp-servers", {"name": "m"}),
              ("POST", "/ajax-api/3.0/mlflow/demo/generate", {}),
              ("POST", "/ajax-api/3.0/mlflow/workspaces", {"name": "w"})]
    for who in (bob, admin):
        for method, path, body in routes:
            status, _, text, _ = call(stack.url, path, method, body, who)
            assert status == 403 and "switched off" in text, (who[0], method, path, status, text[:200])
    status, _, text, _ = call(stack.url, "/ajax-api/3.0/mlflow/server-info")
    assert status == 200 and json.loads(text)["features_enabled"]["gateway"] is False   # the UI hides it
    # the UI's question on every page load, answered as MLflow answers it without a gateway (no error shown)
    endpoints = "/ajax-api/2.0/mlflow/gateway-proxy?gateway_path=api%2F2.0%2Fendpoints%2F"
    status, _, text, _ = call(stack.url, endpoints, auth=bob)
    assert status == 200 and json.loads(text) == {"endpoints": []}
    assert call(stack.url, endpoints)[0] == 401   # anonymous: as everywhere


# Refused routes whose path parameters take `..`: MLflow routes the path as sent (a parameter of `..`, or a `:path`
# one of several segments), the guard used to match it with the dot segments resolved, which climbs out of the
# refused prefix (/gateway/../mlflow/invocations is /mlflow/invocations to it).
DOT_SEGMENTS: list[tuple[str, str, dict | None]] = [("POST", "/gateway/../mlflow/invocations", {"messages": []}),
                ("POST", "/gateway/%2e%2e/mlflow/invocations", {"messages": []}),
                ("POST", "/gateway/proxy/../../api/2.0/mlflow/x", {}),
                ("GET", "/ajax-api/3.0/mlflow/mcp-servers/com.x/srv/../../../../../..", None),
                ("DELETE", "/ajax-api/3.0/mlflow/mcp-servers/com.x/srv/../../../../../..", None),
                ("POST", "/ajax-api/3.0/mlflow/mcp-servers/com.x/srv/versions/1/../../../../../../../../tags",
                 {"key": "k", "value": "v"}),
                ("GET", "/ajax-api/3.0/jobs/..", None),
                ("PATCH", "/api/2.0/mlflow/webhooks/..", {}),
                ("POST", "/api/2.0/mlflow/webhooks/../test", {})]


def test_dot_segments_in_a_refused_routes_parameters_do_not_get_past_the_guard(stack, control):
    reached = [call(control, path, method, body) for method, path, body in DOT_SEGMENTS]
    # MLflow routes them: its handlers answer (about an entity named `..`), not its 404 page
    assert all(status == 404 and "<html" not in text for status, _, text, _ in reached), \
        [(status, text[:120]) for status, _, text, _ in reached]
    for who in (login(stack, "admin"), login(stack, "bob")):
        for method, path, body in DOT_SEGMENTS:
            status, _, text, _ = call(stack.url, path, method, body, who)
            assert status == 403 and "switched off" in text, (who[0], method, path, status, text[:200])


@pytest.mark.parametrize("target", ["server", "ui"])
def test_make_server_and_make_ui_refuse_the_assistant(base, chat, target):
    folder = base / target
    for part in ("conf", ".dvc"):   # a project's root folder, as `linclass ui` and `linclass server` require
        (folder / part).mkdir(parents=True)
    (folder / "dvc.yaml").write_text("stages: {}\n")
    url = f"http://127.0.0.1:{free_port()}"
    venv = BIN.parent
    make = ["make", "-s", "-f", str(ROOT / "Makefile"), f"VENV={venv}", "-o", f"{venv}/bin/.installed", target,
            f"PORT={url.rsplit(':', 1)[1]}"]
    log = folder / "server.log"
    with serving(make, url, log, cwd=folder) as proc:
        # the tracking server answers only its token (a browser's login: any name, the token as password)
        auth = ("anyone", (folder / "mlflow-server" / "token").read_text().strip()) if target == "server" else None
        if target == "server":   # its token: private, long, and named in the line for the clients
            token = folder / "mlflow-server" / "token"
            assert token.stat().st_mode & 0o777 == 0o600 and len(auth[1]) >= 32
            assert (token.parent / "artifacts").stat().st_mode & 0o777 == 0o700   # made before the server's umask
            assert f"MLFLOW_TRACKING_TOKEN=$(cat {token})" in log.read_text(), log.read_text()[-3000:]
        assert assistant_attack(url, chat, auth) == [403, 403, 403]
        assert call(url, "/api/2.0/mlflow/experiments/create", "POST",
                    {"name": "evil", "artifact_location": f"file://{base}"}, auth)[0] == 400
        if target == "ui":
            ui_pages_load_behind_the_guard(url, folder / "server.log")
            a_page_of_another_account_reads_and_writes_nothing(url)
            # only its own address as the Host (MLflow's default lets every private network's address through,
            # and printed at each start how to open the server to other hosts)
            port = url.rsplit(":", 1)[1]
            for host, status in ((f"127.0.0.1:{port}", 200), (f"localhost:{port}", 200),
                                 (f"192.168.1.5:{port}", 403), (f"10.0.0.7:{port}", 403)):
                assert raw_status(url, "GET", SEARCH, [f"Host: {host}"]) == status, host
            assert "--host 0.0.0.0" not in log.read_text(), log.read_text()[-2000:]
            assert a_connection_from_an_owners_local_port_is_refused(url) == 403
        else:
            for wrong in (None, ("anyone", auth[1][:-1]), ("anyone", "")):
                status, headers, _, _ = call(url, "/api/2.0/mlflow/experiments/search?max_results=5", auth=wrong)
                assert status == 401 and headers.get("www-authenticate") == 'Basic realm="linclass"', wrong
            assert call(url, "/api/2.0/mlflow/experiments/search?max_results=5", auth=auth)[0] == 200
            token_attacks(url, auth[1])
            # what the owner's browser, logged in, sends for a page of another origin (the browser may add the login)
            for origin, status in (("http://127.0.0.1:8000", 403), ("http://localhost:8000", 403), ("null", 403),
                                   (url, 200)):
                assert raw_status(url, "GET", SEARCH, [f"Host: {url.removeprefix('http://')}", f"Origin: {origin}",
                                                       f"Authorization: Bearer {auth[1]}"]) == status, origin
            server_pages_load_after_the_login_prompt(url, auth[1], folder / "server.log")
        # another local account: the UI of the project's own store does not answer it, nor the tracking server
        # without the token; neither's database and artifacts are readable from disk
        other = as_other([sys.executable, "-I", "-S", "-c", OTHER_ACCOUNT, url])
        assert other.stdout.split() == (["403", "403"] if target == "ui" else ["401", "401"]), other.stderr[-2000:]
        # Ctrl-C reaches the whole foreground group (make, linclass, mlflow, its uvicorn): `mlflow` used to kill
        # uvicorn mid-shutdown, which printed a CancelledError traceback
        before = len(log.read_bytes())
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        stopping = log.read_bytes()[before:].decode(errors="replace")
        assert "Finished server process" in stopping and "Traceback" not in stopping, stopping[-3000:]
    if target == "server":
        for path in (folder / "mlflow-server", *(folder / "mlflow-server" / name for name in ("mlflow.db", "token"))):
            assert as_other(["ls", str(path)]).returncode != 0, f"another account reads {path}"
    else:   # the project's own store: MLflow made it readable by every account (0644, the artifacts 0755)
        assert as_other(["head", "-c", "1", str(folder / "mlflow.db")]).returncode != 0, "another account reads it"
        assert as_other(["ls", str(folder / "mlartifacts")]).returncode != 0, "another account lists the artifacts"
    assert chat.chats == [] and not chat.marker.exists()


SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"
# (method, path, headers) that must get 401 without the token: paths that resolve to /health, or that MLflow
# might route past a check (case, dot segments, double slashes, percent-encoding), other methods and routes,
# and Authorization headers that look like the token's but are not
NO_TOKEN = [("GET", "/api/2.0/mlflow-artifacts/artifacts/x/../../../../../health", []),   # reached MLflow
            ("GET", "/ajax-api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/../../../../../../../health", []),
            ("GET", "/health/../api/2.0/mlflow/experiments/search", []),
            ("GET", "//api/2.0/mlflow/experiments/search", []),
            ("GET", "/%2e%2e/api/2.0/mlflow/experiments/search", []), ("GET", "/HEALTH", []),
            ("HEAD", "/health", []),
            ("OPTIONS", SEARCH, ["Origin: http://127.0.0.1", "Access-Control-Request-Method: GET"]),
            ("get", SEARCH, []), ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=5", []),
            ("POST", "/graphql", []), ("POST", "/v1/traces", []), ("GET", "/get-artifact?path=a&run_id=b", []),
            ("GET", "/static-files/index.html", []), ("GET", "/", []),
            ("GET", SEARCH, ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])]


def raw_status(url: str, method: str, path: str, headers: list[str], version: str = "HTTP/1.1") -> int:
    """The status of one request sent byte for byte as given (no Host header unless in `headers`)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall("\r\n".join([f"{method} {path} {version}", *headers, "Connection: close", "", ""]).encode())
        answer = b""
        while b"\r\n" not in answer and (chunk := conn.recv(4096)):
            answer += chunk
    return int(answer.split()[1])


def token_attacks(url: str, token: str) -> None:
    """The token check of `make server` against requests that try to pass without the token."""
    def basic(user_password: str) -> str:
        return "Authorization: Basic " + base64.b64encode(user_password.encode()).decode()
    host = f"Host: {url.removeprefix('http://')}"
    wrong = [[f"Authorization: Bearer {token[:-1]}"], [f"Authorization: Bearer {token}x"],
             [f"Authorization: Bearer {token[1:]}"], [f"Authorization: Token {token}"], [basic(f"{token}:")],
             [basic(f":{token[:-1]}")], ["Authorization: Bearer"], [f"X-Authorization: Bearer {token}"],
             [f"Authorization: Bearer {token}", "Authorization: Bearer wrong"]]
    cases = [*NO_TOKEN, *(("GET", SEARCH, headers) for headers in wrong)]
    statuses = [raw_status(url, method, path, [host, *headers]) for method, path, headers in cases]
    assert statuses == [401] * len(cases), [(c[:2], s) for c, s in zip(cases, statuses) if s != 401]
    assert raw_status(url, "GET", SEARCH, [], "HTTP/1.0") == 401   # HTTP/1.0, no Host
    for method, path in (("GET", "/health"), ("get", "/health"), ("GET", "/%68ealth?x=1")):
        assert raw_status(url, method, path, [host]) == 200, (method, path)
    for headers in ([f"Authorization: Bearer {token}"], [basic(f":{token}")], [f"authorization: bearer  {token} "]):
        assert raw_status(url, "GET", SEARCH, [host, *headers]) == 200, headers


def test_the_guard_passes_no_websocket_to_mlflow():
    """MLflow serves no websocket; the guard answers one (a refusal) without passing it on past its checks."""
    import asyncio

    from linclass.orchestration.guard import Guard

    reached, sent = [], []

    async def mlflow(scope, receive, send):
        reached.append(scope["type"])

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}
    guard = Guard(mlflow, logins=False)
    guard.token = "t" * 43
    asyncio.run(guard({"type": "websocket", "path": "/api/2.0/mlflow/experiments/search", "headers": []},
                      receive, send))
    assert reached == [] and [m["type"] for m in sent] == ["websocket.close"]


OTHER_ACCOUNT = """
import json, sys, urllib.error, urllib.request
for path, body in (("/api/2.0/mlflow/experiments/search?max_results=5", None),
                   ("/api/2.0/mlflow/experiments/create", {"name": "planted-by-another-account"})):
    request = urllib.request.Request(sys.argv[1] + path, json.dumps(body).encode() if body else None,
                                     {"Content-Type": "application/json"})
    try:
        print(urllib.request.urlopen(request, timeout=30).status)
    except urllib.error.HTTPError as exc:
        print(exc.code)
"""


def ui_pages_load_behind_the_guard(url: str, log: Path) -> None:
    """A run's page in a real browser: it shows the run, and the only calls the guard refuses are the
    assistant's (MLflow's page shows its panel on localhost, and cannot be told not to)."""
    import re

    from mlflow.tracking import MlflowClient

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no browser: apt-get install -y chromium")
    client = MlflowClient(url)
    run = client.create_run(client.create_experiment("ui-check"), run_name="run-in-the-browser")
    for step in range(5):
        client.log_metric(run.info.run_id, "total_loss", 1.0 / (step + 1), step=step)
    client.set_terminated(run.info.run_id)
    page = f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    dom = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                          "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert "run-in-the-browser" in dom and "total_loss" in dom, dom[-2000:]
    answers = re.findall(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})', log.read_text())
    refused = {(method, path.split("?")[0]) for method, path, status in answers if status[0] in "45"}
    expected = {("GET", "/ajax-api/2.0/mlflow/users/current"),   # no logins on this server: 404
                ("POST", "/api/2.0/mlflow/experiments/create")}   # the artifact_location above
    unexpected = {(method, path) for method, path in refused - expected if not path.startswith(ASSISTANT)}
    assert not unexpected and not [a for a in answers if a[2].startswith("5")], unexpected
    assert ("GET", f"{ASSISTANT}/config") in refused, "the page asked the assistant, and was refused"


SHARED_PORT = """
import socket, sys
port, target = int(sys.argv[1]), int(sys.argv[2])
conn = socket.socket()
conn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
conn.bind(("127.0.0.1", port))
conn.connect(("127.0.0.1", target))
conn.sendall(f"GET {sys.argv[3]} HTTP/1.1\\r\\nHost: 127.0.0.1:{target}\\r\\nConnection: close\\r\\n\\r\\n".encode())
print(conn.recv(4096).split()[1].decode(), flush=True)
"""


def a_connection_from_an_owners_local_port_is_refused(url: str) -> int:
    """The owner-only check finds the client's socket in the kernel's table. The owner has a connection from
    127.0.0.1:P to a server on the UI's port at another address (127.0.0.2); another account connects to the UI from
    the same 127.0.0.1:P (both with SO_REUSEADDR: the 4-tuples differ). The check matched the local address and the
    server's port only, and could take the owner's socket for the other account's. The status the other account
    gets."""
    port = int(url.rsplit(":", 1)[1])
    elsewhere = socket.create_server(("127.0.0.2", port))
    mine = socket.socket()
    try:
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mine.bind(("127.0.0.1", 0))
        mine.connect(("127.0.0.2", port))
        shared = mine.getsockname()[1]
        # no connection from 127.0.0.1:<shared> to the UI exists yet: the check finds no one (it found the owner)
        from linclass.orchestration.guard import peer_uid

        assert peer_uid(("127.0.0.1", shared), ("127.0.0.1", port)) is None
        other = as_other([sys.executable, "-I", "-S", "-c", SHARED_PORT, str(shared), str(port), SEARCH])
        assert other.returncode == 0, other.stderr
        return int(other.stdout.strip())
    finally:
        mine.close()
        elsewhere.close()


CROSS_ORIGIN_PAGE = """
import http.server, sys
page = ('''<html><body><pre id="out">waiting</pre><script>
const target = "%s", out = [];
async function attempt(what, request) {
  try {
    const answer = await request();
    out.push(what + " " + answer.status + " " + (await answer.text()).slice(0, 60));
  }
  catch (error) { out.push(what + " blocked"); }
}
(async () => {
  await attempt("read", () => fetch(target + "/api/2.0/mlflow/experiments/search?max_results=5",
                                    {credentials: "include"}));
  await attempt("write", () => fetch(target + "/api/2.0/mlflow/experiments/create",
      {method: "POST", credentials: "include", headers: {"Content-Type": "application/json"},
       body: JSON.stringify({name: "planted-from-another-origin"})}));
  document.getElementById("out").textContent = ["done", ...out].join(" | ");
})();
</script></body></html>''' % sys.argv[2]).encode()

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page)

server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Page)
print("listening", flush=True)
server.serve_forever()
"""


def a_page_of_another_account_reads_and_writes_nothing(url: str) -> None:
    """Another account serves a page on another port of 127.0.0.1, and the owner opens it in a real browser: the
    page's fetch() calls come from the owner's own process (the browser), past the owner-only check, and MLflow
    lets every localhost origin read its answers and write (CORS, any port, with credentials). The guard refuses
    requests whose Origin is not the server's own: the browser shows the page nothing, and nothing is written."""
    from mlflow.tracking import MlflowClient

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no browser: apt-get install -y chromium")
    port = free_port()
    page = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", sys.executable,
                             "-I", "-S", "-c", CROSS_ORIGIN_PAGE, str(port), url], stdout=subprocess.PIPE, text=True)
    try:
        assert page.stdout is not None and page.stdout.readline().strip() == "listening"
        dom = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                              "--virtual-time-budget=10000", "--dump-dom", f"http://127.0.0.1:{port}/"],
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        page.kill()
        page.wait()
    assert "done | read blocked | write blocked" in dom, dom[-2000:]
    assert MlflowClient(url).get_experiment_by_name("planted-from-another-origin") is None


def server_pages_load_after_the_login_prompt(url: str, token: str, log: Path) -> None:
    """A run's page of `make server` in a real browser whose login prompt gets any user name and the token (as
    a person types them): it shows the run, after one 401 (the prompt), and no other call is refused but the
    assistant's. (A URL with the credentials in it, http://anyone:TOKEN@host/, does not work: the page loads,
    but browsers refuse its fetch() calls under a URL with credentials, so it shows no data.)"""
    import re

    from mlflow.tracking import MlflowClient

    if shutil.which("chromium") is None:
        pytest.skip("no browser: apt-get install -y chromium")
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("browser-check"), run_name="run-in-the-browser")
        client.log_metric(run.info.run_id, "total_loss", 0.5)
        client.set_terminated(run.info.run_id)
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]
    start = len(log.read_text().splitlines())
    text = browse_with_login(f"{url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}", "anyone",
                             token, wait_for="total_loss")
    assert "run-in-the-browser" in text and "total_loss" in text, text[-2000:]
    answers = re.findall(r'"(GET|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d{3})',
                         "\n".join(log.read_text().splitlines()[start:]))
    refused = {(method, path.split("?")[0], status) for method, path, status in answers if status[0] in "45"}
    expected = {("GET", "/", "401"), ("GET", "/ajax-api/2.0/mlflow/users/current", "404")}
    assert ("GET", "/", "401") in refused, "the first request, without the login, was refused: the prompt"
    assert {r for r in refused - expected if not r[1].startswith(ASSISTANT)} == set(), refused


def browse_with_login(url: str, user: str, password: str, wait_for: str) -> str:
    """The text of `url`'s page in headless chromium (playwright), whose login prompt gets `user` and `password`,
    as a person types them, once it shows `wait_for` (or after 90 s)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            # credentials answer a 401's prompt, never sent unasked (send="unauthorized")
            context = browser.new_context(http_credentials={"username": user, "password": password,
                                                            "send": "unauthorized"})
            page = context.new_page()
            page.goto(url)
            with contextlib.suppress(PlaywrightTimeout):   # the caller's assertion says what is missing
                page.get_by_text(wait_for).first.wait_for(timeout=90_000)
            return page.inner_text("body")
        finally:
            browser.close()


# ---- artifacts where the server decides ----

def test_an_experiment_cannot_choose_where_the_server_writes(stack, control, base):
    target = base / "chosen-by-a-user"
    target.mkdir(mode=0o777)
    target.chmod(0o777)
    status, _, text, _ = call(control, "/api/2.0/mlflow/experiments/create", "POST",
                              {"name": "elsewhere", "artifact_location": target.as_uri()})
    assert status == 200, "the control accepts any folder"
    bob = login(stack, "bob")
    bodies = [{"name": "elsewhere", "artifact_location": target.as_uri()},
              {"name": "elsewhere", "artifactLocation": target.as_uri()},
              json.dumps(json.dumps({"name": "elsewhere", "artifact_location": target.as_uri()})),
              {"name": "elsewhere", "artifact_location": "mlflow-artifacts:/../../../tmp"}]
    for path in ("/api/2.0/mlflow/experiments/create", "/ajax-api/2.0/mlflow/experiments/create"):
        for body in bodies:
            status, _, text, _ = call(stack.url, path, "POST", body, bob)
            assert status == 400 and "artifact_location" in text, (path, body, status, text)
    assert call(stack.url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=elsewhere", auth=bob)[0] == 404
    status, _, text, _ = call(stack.url, "/api/2.0/mlflow/experiments/create", "POST", {"name": "bob-here"}, bob)
    assert status == 200
    experiment = json.loads(call(stack.url, "/api/2.0/mlflow/experiments/get?experiment_id="
                                 + json.loads(text)["experiment_id"], auth=bob)[2])["experiment"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:/"), experiment
    assert list(target.iterdir()) == []



def raw_answer(url: str, method: str, path: str, headers: list[str], body: str = "") -> tuple[int, str]:
    """(status, body) of one request whose headers are sent exactly as given, repeated ones included."""
    host, port = url.removeprefix("http://").split(":")
    data = body.encode()
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        conn.sendall("\r\n".join([f"{method} {path} HTTP/1.1", *headers, f"Content-Length: {len(data)}",
                                   "Connection: close", "", ""]).encode() + data)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, text = answer.decode(errors="replace").partition("\r\n\r\n")
    return int(head.split()[1]), text


def test_a_header_sent_twice_or_a_form_type_takes_no_body_past_the_guard(stack, base):
    # Found by an attack: the guard read the last Content-Type and checked no body of a form's type, while MLflow's
    # handlers read the headers joined by its WSGI bridge ("application/json;x=1, multipart/form-data"), keep what
    # comes before the first ";" and read the body as JSON. So a teammate chose the folder where the server (the
    # stack's account) keeps and lists a run's artifacts: a link there to the stack's folder, and /get-artifact
    # handed out secrets.env (the admin's and the database's passwords).
    bob = login(stack, "bob")
    host = f"Host: {stack.url.removeprefix('http://')}"
    auth = "Authorization: Basic " + base64.b64encode(":".join(bob).encode()).decode()
    twice = "the {} header is sent more than once"
    attempts = {   # the headers, and what the guard's 400 says
        "json and a form": ([host, auth, "Content-Type: application/json; charset=utf-8",
                             "Content-Type: application/x-www-form-urlencoded"], twice.format("content-type")),
        "json with a parameter and multipart": ([host, auth, "Content-Type: application/json;x=1",
                                                 "Content-Type: multipart/form-data"], twice.format("content-type")),
        "a form's type alone": ([host, auth, "Content-Type: application/x-www-form-urlencoded"], "artifact_location"),
        "two origins": ([host, f"Origin: http://{host[6:]}", "Origin: http://elsewhere.example", auth,
                         "Content-Type: application/json"], twice.format("origin")),
        "two hosts": ([host, "Host: elsewhere.example", auth, "Content-Type: application/json"],
                      "Invalid HTTP request"),   # uvicorn's own answer
    }
    for i, (attempt, (headers, said)) in enumerate(attempts.items()):
        target = base / f"bobs-folder-{i}"
        target.mkdir(mode=0o777)
        target.chmod(0o777)
        name = f"bobs-choice-{i}"
        status, text = raw_answer(stack.url, "POST", "/api/2.0/mlflow/experiments/create", headers,
                                  json.dumps({"name": name, "artifact_location": target.as_uri()}))
        found, _, experiment, _ = call(stack.url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}",
                                       auth=bob)
        leaked = ""
        if found == 200:   # what bob got with it: the server read the stack's folder for him
            run = json.loads(call(stack.url, "/api/2.0/mlflow/runs/create", "POST",
                                  {"experiment_id": json.loads(experiment)["experiment"]["experiment_id"]},
                                  bob)[2])["run"]["info"]["run_id"]
            (target / run).mkdir()
            (target / run / "artifacts").symlink_to(stack.folder)
            leaked = call(stack.url, f"/get-artifact?path=secrets.env&run_uuid={run}", auth=bob)[2]
        assert status == 400 and said in text and found == 404, (attempt, status, text[:200], leaked[:100])
        assert stack.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"] not in leaked
        assert list(target.iterdir()) == []


# Found by two attacks. MLflow lets a client set its trace's tag mlflow.artifactLocation (the tag routes, the v2
# end-trace route, a root span's attribute mlflow.traceTag.<key> through its OTLP route /v1/traces, JSON or
# protobuf), and get-trace-artifact reads the trace's attachments from there as the stack's account, checking the
# resolved path and then opening the path again: bob pointed his trace at a folder of his, swapped a file there
# for a link to .services/secrets.env, and got the admin's and the database's passwords within a few requests.
# And OTLP and start-trace v3 write into, or move, the trace of a given id wherever it is: bob, with no permission
# on carol's experiment, added tags and spans to her trace, and moved it into his experiment to read her inputs.
# The project logs no traces: every request that writes them is refused, the reads stay.
def otlp(stack: Stack, user: tuple[str, str], experiment_id: str, trace_hex: str, attributes: dict[str, str],
         encoding: str = "json") -> int:
    """Send one root span of trace `trace_hex` (32 hex digits: MLflow's trace tr-<them>) to MLflow's OTLP route
    /v1/traces, as JSON or protobuf, with `attributes`: the status."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    now, span_hex = time.time_ns(), secrets.token_hex(8)
    span = {"traceId": trace_hex, "spanId": span_hex, "name": "root", "status": {"code": 1},
            "startTimeUnixNano": str(now - 10**6), "endTimeUnixNano": str(now),
            "attributes": [{"key": key, "value": {"stringValue": value}} for key, value in attributes.items()]}
    request = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "attack"}, "spans": [span]}]}]}
    if encoding == "json":
        body, kind = json.dumps(request).encode(), "application/json"
    else:   # protobuf's JSON mapping takes the ids as base64
        span["traceId"] = base64.b64encode(bytes.fromhex(trace_hex)).decode()
        span["spanId"] = base64.b64encode(bytes.fromhex(span_hex)).decode()
        body, kind = ParseDict(request, ExportTraceServiceRequest()).SerializeToString(), "application/x-protobuf"
    return call(stack.url, "/v1/traces", "POST", body, user,
                headers={"Content-Type": kind, "X-Mlflow-Experiment-Id": experiment_id})[0]


def test_no_request_writes_a_trace_and_the_reads_stay(stack, base):
    bob = login(stack, "bob")
    status, _, text, _ = call(stack.url, "/api/2.0/mlflow/experiments/create", "POST", {"name": "bobs-traces"}, bob)
    experiment = json.loads(text)["experiment_id"]
    trace_hex = secrets.token_hex(16)
    trace, elsewhere = f"tr-{trace_hex}", (base / "bobs-folder").as_uri()
    location = {"key": "mlflow.artifactLocation", "value": elsewhere}
    start = {"trace": {"trace_info": {"trace_id": trace, "request_time": "2026-01-01T00:00:00Z", "state": "OK",
                                      "trace_location": {"type": "MLFLOW_EXPERIMENT",
                                                         "mlflow_experiment": {"experiment_id": experiment}}}}}
    writes = {
        "otlp json": lambda: otlp(stack, bob, experiment, trace_hex, {"mlflow.traceTag.mlflow.artifactLocation":
                                                                      elsewhere}),
        "otlp protobuf": lambda: otlp(stack, bob, experiment, trace_hex, {}, "protobuf"),
        "start v3": lambda: call(stack.url, "/api/3.0/mlflow/traces", "POST", start, bob)[0],
        "start v2": lambda: call(stack.url, "/api/2.0/mlflow/traces", "POST",
                                 {"experiment_id": experiment, "timestamp_ms": 1, "tags": [location]}, bob)[0],
        "end v2": lambda: call(stack.url, f"/api/2.0/mlflow/traces/{trace}", "PATCH",
                               {"timestamp_ms": 2, "status": "OK", "tags": [location]}, bob)[0],
        **{f"tag {api} {method}": (lambda api=api, method=method: call(
            stack.url, f"/{api}/mlflow/traces/{trace}/tags", method, location, bob)[0])
           for api in ("api/2.0", "api/3.0", "ajax-api/3.0") for method in ("PATCH", "DELETE")},
        "assessment": lambda: call(stack.url, f"/api/3.0/mlflow/traces/{trace}/assessments", "POST",
                                   {"assessment": {"assessment_name": "x"}}, bob)[0],
        "link to a run": lambda: call(stack.url, "/api/2.0/mlflow/traces/link-to-run", "POST",
                                      {"trace_ids": [trace], "run_id": "x"}, bob)[0],
        "delete": lambda: call(stack.url, "/api/3.0/mlflow/traces/delete-traces", "POST",
                               {"experiment_id": experiment, "request_ids": [trace]}, bob)[0],
    }
    statuses = {name: write() for name, write in writes.items()}
    assert all(status == 403 for status in statuses.values()), statuses
    assert call(stack.url, f"/api/3.0/mlflow/traces/{trace}", auth=login(stack, "admin"))[0] == 404, "a trace made"
    search = call(stack.url, "/api/3.0/mlflow/traces/search", "POST",
                  {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}]},
                  bob)
    assert search[0] == 200 and json.loads(search[2]).get("traces", []) == [], search[:3]


def test_a_model_version_reads_no_teammates_artifacts_from_the_stacks_bucket(base, s3_server):
    # Found by an attack: with the artifacts in S3 (LINCLASS_ARTIFACTS=s3://bucket/prefix, a documented setting),
    # MLflow (3.17) lets a model version's source be any s3:// URI (it checks runs:/, models:/, mlflow-artifacts: and
    # local paths against the request's run or logged model, nothing else), and /model-versions/get-artifact reads it
    # with the server's credentials. bob registers a model of his whose version's source is carol's run's folder in the
    # bucket (<prefix>/<experiment id>/<run id>/artifacts) and downloads her artifacts (any object the credentials
    # reach: the whole bucket, the team's DVC remote if it is there too).
    endpoint, aws = s3_server
    folder = base / "s3-stack"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}, **aws,
           "LINCLASS_SERVICES_DIR": str(folder), "LINCLASS_MLFLOW_PORT": str(free_port()),
           "LINCLASS_PG_PORT": str(free_port()), "LINCLASS_ARTIFACTS": "s3://linclass-team/mlflow",
           "MLFLOW_S3_ENDPOINT_URL": endpoint}
    up = services(env, "up")
    try:
        stack = Stack(folder, env, up, 0.0)
        for name in ("bob", "carol"):
            add_user(stack, name)
        bob, carol = login(stack, "bob"), login(stack, "carol")
        experiment = json.loads(call(stack.url, "/api/2.0/mlflow/experiments/create", "POST",
                                     {"name": "carols-models"}, carol)[2])["experiment_id"]
        run = json.loads(call(stack.url, "/api/2.0/mlflow/runs/create", "POST", {"experiment_id": experiment},
                              carol)[2])["run"]["info"]["run_id"]
        assert call(stack.url, f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/model/MLmodel",
                    "PUT", b"carols-weights", carol)[0] == 200
        assert call(stack.url, f"/get-artifact?path=model/MLmodel&run_uuid={run}", auth=bob)[0] == 403
        assert call(stack.url, "/api/2.0/mlflow/registered-models/create", "POST", {"name": "bobs-model"},
                    bob)[0] == 200
        created, _, text, _ = call(stack.url, "/api/2.0/mlflow/model-versions/create", "POST", {
            "name": "bobs-model", "source": f"s3://linclass-team/mlflow/{experiment}/{run}/artifacts"}, bob)
        got = call(stack.url, "/model-versions/get-artifact?path=model/MLmodel&name=bobs-model&version=1",
                   auth=bob) if created == 200 else (None, {}, "", 0.0)
        assert created == 400 and "carols-weights" not in got[2], (created, text[:300], got[0], got[2][:100])
    finally:
        services(env, "down", check=False)


def test_a_teammate_without_grants_reads_no_model_of_the_projects_registry(stack, monkeypatch):
    # Found by an attack: the pipeline's evaluate registers every model in the registered model named like the
    # project's experiment (registry.register: "already exists" is taken as its own), which nobody creates ahead of
    # it, unlike the experiment (grant: admin_experiment). bob, with no grant on the project, creates it first (he
    # MANAGEs it) and lets carol write to it; carol's evaluate registers her model there, and bob downloads it through
    # /model-versions/get-artifact (MLflow checks the registered model's permission only). Not granting it makes
    # carol's evaluate fail instead (403).
    from mlflow.tracking import MlflowClient

    from linclass.orchestration.services import grant
    from linclass.settings import Tracking
    from linclass.tracking import registry

    bob, carol = login(stack, "bob"), login(stack, "carol")
    project = Tracking().experiment
    grant(stack.url, stack.secrets["MLFLOW_AUTH_ADMIN_PASSWORD"], "carol", project, "EDIT")   # as --grant does
    experiment = json.loads(call(stack.url, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={project}",
                                 auth=carol)[2])["experiment"]["experiment_id"]
    assert call(stack.url, f"/api/2.0/mlflow/experiments/get?experiment_id={experiment}", auth=bob)[0] == 403
    squatted = call(stack.url, "/api/2.0/mlflow/registered-models/create", "POST", {"name": project}, bob)[0]
    if squatted == 200:
        assert call(stack.url, "/api/3.0/mlflow/users/permissions/grant", "POST",
                    {"username": "carol", "resource_type": "registered_model", "resource_id": project,
                     "permission": "EDIT"}, bob)[0] == 200
    for name, value in (("MLFLOW_TRACKING_URI", stack.url), ("MLFLOW_TRACKING_USERNAME", carol[0]),
                        ("MLFLOW_TRACKING_PASSWORD", carol[1])):
        monkeypatch.setenv(name, value)
    client = MlflowClient()
    run = client.create_run(experiment)
    model = client.create_logged_model(experiment, name="model", source_run_id=run.info.run_id)
    where = f"{experiment}/models/{model.model_id}/artifacts/MLmodel"
    assert call(stack.url, f"/api/2.0/mlflow-artifacts/artifacts/{where}", "PUT", b"carols-model", carol)[0] == 200
    version = registry.register(client, project, run.info.run_id, model.model_id, {"model": "svm-l2"})
    status, _, text, _ = call(stack.url, f"/model-versions/get-artifact?path=MLmodel&name={project}&version={version}",
                              auth=bob)
    assert status == 403 and "carols-model" not in text, (squatted, status, text[:100])


# ---- script a teammate stores, run in another teammate's browser on the stack's origin ----

# What carol's browser does once she clicks the link bob planted: as carol (her login, which the browser keeps, on the
# stack's own origin: the Origin check passes), grant bob MANAGE on every experiment she may manage.
GRANT_ALL_TO_BOB = ("(async()=>{const h={'Content-Type':'application/json'};"
                    "const x=await (await fetch('/ajax-api/2.0/mlflow/experiments/search?max_results=1000')).json();"
                    "for(const e of (x.experiments||[])){await fetch('/ajax-api/3.0/mlflow/users/permissions/grant',"
                    "{method:'POST',headers:h,body:JSON.stringify({username:'bob',resource_type:'experiment',"
                    "resource_id:e.experiment_id,permission:'MANAGE'})})}document.title='planted-script-ran'})()")


def planted_source_name(script: str) -> str:
    """A run's tag mlflow.source.name that MLflow's UI (3.17) turns into the run's Source link: its git-repository
    pattern (`(.*?[@/][^?]*git.*?)[:/]([^#]+)`) keeps a `javascript:` scheme, so the link's href is
    `javascript://git/x%0a<script>//train.py` (a comment, a newline, the script), shown as "train.py", opened in the
    page itself (target=_top). React 18 renders javascript: URLs."""
    for pad in range(16):
        encoded = base64.b64encode((script + " " * pad).encode()).decode()
        if "git" not in encoded:   # the pattern's last "git" must be the one before the script
            return f"javascript://git/x%0aeval(atob('{encoded}'))//train.py"
    raise AssertionError("no encoding of the script fits the pattern")


def click_in_browser(url: str, user: tuple[str, str], page_url: str, text: str) -> str:
    """`user` opens `page_url` in headless chromium (logged in) and clicks the first element showing `text`: the
    page's title 5 s later."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(http_credentials={"username": user[0], "password": user[1],
                                                            "send": "unauthorized"})
            page = context.new_page()
            page.goto(page_url)
            link = page.get_by_text(text, exact=True).first
            link.wait_for(timeout=90_000)
            link.click()
            page.wait_for_timeout(5_000)
            return page.title()
        finally:
            browser.close()


def test_a_link_a_teammate_stores_runs_no_script_in_another_teammates_browser(stack):
    # Found by an attack: bob sets his run's tag mlflow.source.name (any client sets it; MLflow checks nothing) to a
    # javascript: URL that the UI's Source link keeps; he shares his experiment with carol (READ, as teammates do:
    # "look at my run"), or the admin opens it. carol clicks the run's Source ("train.py"): the script runs on the
    # stack's origin with her login and grants bob MANAGE on all her experiments; he then reads and deletes her runs.
    if shutil.which("chromium") is None:
        pytest.skip("no browser: apt-get install -y chromium")
    bob, carol = login(stack, "bob"), login(stack, "carol")
    experiment = json.loads(call(stack.url, "/api/2.0/mlflow/experiments/create", "POST",
                                 {"name": "carols-private"}, carol)[2])["experiment_id"]
    carols_run = json.loads(call(stack.url, "/api/2.0/mlflow/runs/create", "POST", {"experiment_id": experiment},
                                 carol)[2])["run"]["info"]["run_id"]
    call(stack.url, "/api/2.0/mlflow/runs/log-parameter", "POST",
         {"run_id": carols_run, "key": "secret", "value": "carols-secret"}, carol)
    assert call(stack.url, f"/api/2.0/mlflow/runs/get?run_id={carols_run}", auth=bob)[0] == 403
    shared = json.loads(call(stack.url, "/api/2.0/mlflow/experiments/create", "POST", {"name": "bobs-shared"},
                             bob)[2])["experiment_id"]
    status, _, text, _ = call(stack.url, "/api/2.0/mlflow/runs/create", "POST", {
        "experiment_id": shared, "run_name": "bobs-run",
        "tags": [{"key": "mlflow.source.name", "value": planted_source_name(GRANT_ALL_TO_BOB)},
                 {"key": "mlflow.source.type", "value": "LOCAL"}]}, bob)
    title = None
    if status == 200:   # the stack may refuse the tag itself (400): nothing planted, nothing to click
        bobs_run = json.loads(text)["run"]["info"]["run_id"]
        assert call(stack.url, "/api/3.0/mlflow/users/permissions/grant", "POST",
                    {"username": "carol", "resource_type": "experiment", "resource_id": shared,
                     "permission": "READ"}, bob)[0] == 200
        title = click_in_browser(stack.url, carol, f"{stack.url}/#/experiments/{shared}/runs/{bobs_run}", "train.py")
    status, _, text, _ = call(stack.url, f"/api/2.0/mlflow/runs/get?run_id={carols_run}", auth=bob)
    # title: bob's script ran in carol's browser, as carol; status 200: bob reads carol's run
    assert title != "planted-script-ran" and status == 403 and "carols-secret" not in text, (title, status, text[:200])


# ---- files on disk, read by a second local account ----

def as_other(cmd: list[str], groups: str | None = None) -> subprocess.CompletedProcess:
    """`cmd` as nobody (in the groups `groups`, comma-separated gids, if given)."""
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    setpriv += [f"--groups={groups}"] if groups else ["--clear-groups"]
    return subprocess.run([*setpriv, "--", *cmd], capture_output=True, text=True, timeout=30)


def test_a_second_local_account_reads_nothing_of_the_stack(stack, base):
    import grp

    bob = login(stack, "bob")
    run = json.loads(call(stack.url, "/api/2.0/mlflow/runs/create", "POST", {"experiment_id": "0"},
                          login(stack, "admin"))[2])["run"]["info"]
    status, *_ = call(stack.url, f"/api/2.0/mlflow-artifacts/artifacts/0/{run['run_id']}/artifacts/secret.txt",
                      "PUT", b"admin's artifact", login(stack, "admin"))
    assert status == 200
    folder, account = stack.folder, pwd.getpwnam("linclass-stack")
    seen = []
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        assert st.st_uid == account.pw_uid, f"{path} belongs to {st.st_uid}"
        if path == folder:
            assert st.st_mode & 0o7777 == 0o710
        elif path == folder / "dvc-remote":
            assert st.st_mode & 0o7777 == 0o2770 and st.st_gid == grp.getgrnam("linclass-team").gr_gid
        elif path.is_dir():
            assert st.st_mode & 0o077 == 0, f"{path} is {oct(st.st_mode)}"
        else:
            assert st.st_mode & 0o077 == 0, f"{path} is {oct(st.st_mode)}"
            seen.append(path)
    names = {p.name for p in seen}
    assert {"secrets.env", "auth.ini", "state.json", "mlflow.log", "postgres.log", "admin.env", "bob.env",
            "secret.txt"} <= names, names
    tried = [p for p in seen if "postgres" not in p.relative_to(folder).parts[:1]]
    for path in tried + [folder / "postgres" / "PG_VERSION", folder / "postgres" / "postgresql.conf"]:
        proc = as_other(["cat", str(path)])
        assert proc.returncode != 0 and "Permission denied" in proc.stderr, (path, proc.stdout[:100])
    for folder_path in (folder, folder / "artifacts", folder / "users", folder / "dvc-remote"):
        assert as_other(["ls", str(folder_path)]).returncode != 0, folder_path
    # a teammate in the team's group uses the DVC remote (and nothing else)
    team = str(grp.getgrnam("linclass-team").gr_gid)
    probe = folder / "dvc-remote" / "teammate-was-here"
    assert as_other(["touch", str(probe)], groups=team).returncode == 0 and probe.exists()
    assert as_other(["ls", str(folder / "dvc-remote")], groups=team).returncode == 0
    assert as_other(["cat", str(folder / "secrets.env")], groups=team).returncode != 0
    # bob, through the server, is refused what the disk no longer gives away
    assert call(stack.url, f"/api/2.0/mlflow-artifacts/artifacts/0/{run['run_id']}/artifacts/secret.txt",
                auth=bob)[0] == 403


# Another account listening on a port of the stack while that part is down: it answers like the part and prints a
# digest of every secret it is sent (HTTP: the Authorization header; PostgreSQL: it asks for the password in clear).
STAND_IN = r"""
import hashlib, socket, struct, sys, threading
kind, port = sys.argv[1], int(sys.argv[2])
server = socket.create_server(("127.0.0.1", port))
print("listening", flush=True)


def got(secret: bytes) -> None:
    print("got secret", hashlib.sha256(secret).hexdigest(), flush=True)


def answer(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as f:
        if kind == "http":   # 200 to every request, as a server that is up would answer /health
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"authorization:"):
                    got(line.split(b":", 1)[1].strip())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                         b"Connection: close\r\n\r\n{}")
            return
        while True:   # PostgreSQL: no TLS, no GSS, then ask for the password in clear
            size, code = struct.unpack("!ii", f.read(8))
            f.read(size - 8)
            if code not in (80877103, 80877104):
                break
            conn.sendall(b"N")
        conn.sendall(b"R" + struct.pack("!ii", 8, 3))
        if f.read(1) == b"p":
            size, = struct.unpack("!i", f.read(4))
            got(f.read(size - 4).rstrip(b"\0"))


while True:
    threading.Thread(target=answer, args=(server.accept()[0],), daemon=True).start()
"""


class StandIn:
    def __init__(self, kind: str, port: int, user: str = "nobody"):
        group = "nogroup" if user == "nobody" else user
        self.proc = subprocess.Popen(["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--",
                                      sys.executable, "-I", "-S", "-c", STAND_IN, kind, str(port)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "listening"

    def secrets_sent(self) -> list[str]:
        self.proc.kill()
        return [line for line in self.proc.communicate()[0].splitlines() if line.startswith("got secret")]


def test_no_secret_goes_to_another_accounts_process_on_the_stacks_ports(base):
    # `services up` took a stand-in answering /health for its MLflow server (which could not bind), said
    # "stack up" and sent it the admin's password; `services status` sent the database password in clear to a
    # stand-in on PostgreSQL's port while PostgreSQL was down, and so would the MLflow server on reconnecting.
    from linclass.orchestration.services import database_answers, running_secrets, stack_config

    folder = base / "squatted"
    mlflow_port, pg_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
           "LINCLASS_SERVICES_DIR": str(folder), "LINCLASS_MLFLOW_PORT": str(mlflow_port),
           "LINCLASS_PG_PORT": str(pg_port)}
    held = "is held by another account's process (uid 65534), not by the stack: it would get the {}; stop that " \
           "process, or give the stack other ports (LINCLASS_MLFLOW_PORT, LINCLASS_PG_PORT)"
    try:
        stranger = StandIn("http", mlflow_port)
        up = services(env, "up", check=False)
        assert stranger.secrets_sent() == [], "the admin's password went to the stand-in"
        assert up.returncode == 1 and up.stderr.strip() == \
            f"error: 127.0.0.1:{mlflow_port} {held.format('admin password')}", up.stdout + up.stderr
        services(env, "down")
        stranger = StandIn("pg", pg_port)
        status = services(env, "status", check=False)
        backend = stack_config(folder, json.loads((folder / "state.json").read_text()),
                               running_secrets(folder))["backend"]
        ok, why = database_answers(backend)   # as the MLflow server connects: SCRAM only
        assert stranger.secrets_sent() == [], "the database password went to the stand-in"
        assert status.returncode == 1 and status.stderr.strip() == \
            f"error: 127.0.0.1:{pg_port} {held.format('database password')}", status.stdout + status.stderr
        assert not ok and "server requested a cleartext password" in why, why
    finally:
        services(env, "down", check=False)



def test_a_stack_folder_another_account_made_first_is_not_taken_over(base):
    # `services up` made every entry of its folder the stack's, whoever had made it: another account that made the
    # folder first (LINCLASS_SERVICES_DIR where it may write, a path it guessed) chose the passwords of the stack's
    # admin and database (its secrets.env), or a database whose settings run its commands, for root to adopt.
    nobody = pwd.getpwnam("nobody")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")},
           "LINCLASS_MLFLOW_PORT": str(free_port()), "LINCLASS_PG_PORT": str(free_port())}
    planted = "LINCLASS_PG_PASSWORD=known\nMLFLOW_FLASK_SERVER_SECRET_KEY=known\nMLFLOW_AUTH_ADMIN_PASSWORD=known\n" \
              "MLFLOW_CRYPTO_KEK_PASSPHRASE=known\n"
    outside = base / "a-file-of-roots"
    outside.write_text(planted)
    said = {"the folder": "belongs to uid {uid}, not to the stack's account linclass-stack: another account may have "
                          "put it there", "an entry": "belongs to uid {uid}, not to the stack's account",
            "a hard link": "is a hard link (2 names): root never gives a file that has another name"}
    for case in said:
        folder = base / f"made-first-{case.replace(' ', '-')}"
        folder.mkdir(mode=0o755)
        if case == "a hard link":   # whoever runs as the stack's account, where fs.protected_hardlinks=0: /etc/shadow
            os.link(outside, folder / "secrets.env")
        else:
            (folder / "secrets.env").write_text(planted)
        stranger = folder if case == "the folder" else folder / "secrets.env"
        if case != "a hard link":
            for path in {folder / "secrets.env", stranger}:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        owner = stranger.stat().st_uid
        try:
            up = services({**env, "LINCLASS_SERVICES_DIR": str(folder)}, "up", check=False)
        finally:   # (had it started: stopped)
            services({**env, "LINCLASS_SERVICES_DIR": str(folder)}, "down", check=False)
        expected = f"error: {stranger} {said[case].format(uid=nobody.pw_uid)}"
        assert up.returncode == 1 and up.stderr.startswith(expected), (case, up.stdout + up.stderr)
        assert len(up.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in folder.iterdir()) == ["secrets.env"], "nothing made or started there"
        assert (folder / "secrets.env").read_text() == planted and stranger.stat().st_uid == owner


def test_the_stack_runs_as_its_own_account_never_root(stack):
    import psutil

    state = json.loads((stack.folder / "state.json").read_text())
    server = psutil.Process(state["mlflow_pid"])
    postmaster = psutil.Process(int((stack.folder / "postgres" / "postmaster.pid").read_text().split()[0]))
    main = [server, *server.children(recursive=True), postmaster]
    account = pwd.getpwnam("linclass-stack")
    for process in main + postmaster.children():
        assert process.uids().real == account.pw_uid and process.uids().effective == account.pw_uid, process
    for process in main:   # (PostgreSQL's workers write their titles over their environment)
        assert process.environ().get("HOME") == account.pw_dir != "/root", process
    environ = server.environ()   # nothing of the caller's environment but PATH (and an S3 store's settings)
    assert "CALLERS_OWN_SECRET" not in environ and not any(k.startswith("LINCLASS_") for k in environ)


def test_another_account_plants_nothing_in_the_servers_temporary_files(stack):
    # MLflow takes a lock, /tmp/db_init_lock-<md5 of the database URL>, when it makes its jobs or workspace store, and
    # SQLAlchemy hides the password in that URL: any account tells the name from the port alone. A link there (this
    # machine follows links in /tmp: fs.protected_symlinks=0) has the server open it for writing (secrets.env,
    # emptied, and the stack's databases with it); a file of its own, locked, holds the server. The routes that make
    # those stores are refused (jobs, and before the fix above /ajax-api/3.0/jobs/..): the server's temporary files
    # go to a folder of its own all the same, where no other account can plant anything.
    import psutil
    import sqlalchemy

    from linclass.orchestration.services import SCRAM_ONLY

    url = sqlalchemy.engine.make_url(f"postgresql://linclass:unknown@127.0.0.1:{free_port()}/mlflow?{SCRAM_ONLY}")
    assert "unknown" not in str(url)   # the lock's name does not depend on the password
    server = psutil.Process(json.loads((stack.folder / "state.json").read_text())["mlflow_pid"])
    for process in [server, *server.children(recursive=True)]:
        assert process.environ().get("TMPDIR") == str(stack.folder / "tmp"), process
    tmp = (stack.folder / "tmp").stat()
    assert tmp.st_mode & 0o777 == 0o700 and tmp.st_uid == pwd.getpwnam("linclass-stack").pw_uid
    assert as_other(["touch", str(stack.folder / "tmp" / "planted")]).returncode != 0


def test_a_normal_user_runs_the_stack_as_themselves(base):
    import psutil

    from linclass.orchestration.accounts import Account
    from linclass.orchestration.services import server_python

    home = base / "normal-user"
    home.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    account = Account("nobody", nobody.pw_uid, nobody.pw_gid, str(home))
    python, python_env = server_python(account, home)
    env = {**account.env(), **python_env, "LINCLASS_SERVICES_DIR": str(home / "services"),
           "LINCLASS_MLFLOW_PORT": str(free_port()), "LINCLASS_PG_PORT": str(free_port())}

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "linclass.cli", "services", *args], env=env, cwd=home,
                              capture_output=True, text=True, timeout=240, **account.popen_args())

    up = as_nobody("up")
    try:
        assert up.returncode == 0, up.stderr
        status = as_nobody("status")
        assert status.returncode == 0 and "database: answers" in status.stdout, status.stdout + status.stderr
        state = json.loads((home / "services" / "state.json").read_text())
        server = psutil.Process(state["mlflow_pid"])
        assert {p.uids().effective for p in [server, *server.children(recursive=True)]} == {nobody.pw_uid}
        for path in (home / "services").rglob("*"):
            st = path.lstat()
            assert st.st_uid == nobody.pw_uid and (path.name == "dvc-remote" or st.st_mode & 0o077 == 0), path
    finally:
        as_nobody("down")

# ---- the stack's own account against root ----
# Everything in the stack's folder belongs to its account: whoever runs as it (someone who took over the MLflow
# server, which runs as it) can replace those files and folders, by links too. Root, who runs `services up`,
# `add-user`, `status` and `down` on that folder, must act there on nothing but the stack's own.

def as_stack(script: str) -> subprocess.CompletedProcess:
    """A shell script run as the stack's account (linclass-stack, no other groups)."""
    return subprocess.run(["setpriv", "--reuid=linclass-stack", "--regid=linclass-stack", "--clear-groups", "--",
                           "sh", "-ec", script], capture_output=True, text=True, timeout=30)


def roots_folder(base: Path, name: str) -> Path:
    """A folder of root's with one file of root's in it (think /etc, /root/.ssh)."""
    folder = base / name
    folder.mkdir(mode=0o755)
    (folder / "precious").write_text("root's own\n")
    (folder / "precious").chmod(0o644)
    return folder


def untouched(folder: Path) -> list:
    return sorted((p.name, p.lstat().st_uid, oct(p.lstat().st_mode & 0o7777)) for p in [folder, *folder.iterdir()])


def test_a_link_the_stacks_account_planted_leads_root_nowhere(stack, base):
    # users/ replaced by a link to a folder of root's: `add-user` as root gave every file under it to the stack's
    # account (users -> /etc: /etc/shadow and /etc/passwd, root for the taking) and wrote the user's file there
    from linclass.orchestration.accounts import AccountError, private_dir, shared_dir, stack_account, write_private

    victim = roots_folder(base, "roots-users")
    before = untouched(victim)
    users = stack.folder / "users"
    assert as_stack(f"mv {users} {users}.moved && ln -s {victim} {users}").returncode == 0
    try:
        added = services(stack.env, "add-user", "mallory", check=False)
    finally:
        assert as_stack(f"rm {users} && mv {users}.moved {users}").returncode == 0
    assert untouched(victim) == before, "root changed a folder of its own through the stack's link"
    assert added.returncode == 1 and added.stderr.strip() == \
        f"error: {users} is a link, not a folder: root never follows a link in the stack's folder (the stack's " \
        "account, or whoever runs as it, may have planted it); remove it", added.stderr
    admin = login(stack, "admin")
    assert call(stack.url, "/api/2.0/mlflow/users/get?username=mallory", auth=admin)[0] == 404, "half-done"
    # each of root's ways into the folder: a folder made private (postgres/, artifacts/, users/), a file written,
    # the DVC remote given to the team
    import grp

    account, team = stack_account(), grp.getgrnam("linclass-team")
    for name in ("artifacts-link", "remote-link"):
        assert as_stack(f"ln -s {victim} {stack.folder / name}").returncode == 0
    try:
        for attempt in (lambda: private_dir(stack.folder / "artifacts-link", account),
                        lambda: write_private(stack.folder / "artifacts-link" / "auth.ini", "x", account),
                        lambda: shared_dir(stack.folder / "remote-link", account, team)):
            with pytest.raises(AccountError, match="is a link, not a folder"):
                attempt()
    finally:
        assert as_stack(f"rm {stack.folder / 'artifacts-link'} {stack.folder / 'remote-link'}").returncode == 0
    assert untouched(victim) == before


def test_a_server_that_links_its_log_elsewhere_and_exits_shows_root_nothing_of_it(tmp_path):
    # The MLflow server runs as the stack's account, which owns its log: it may replace the log by a link to a file
    # only root reads, then exit. Root's `services up` printed the log's last line in its error.
    from linclass.orchestration.accounts import AccountError
    from linclass.orchestration.services import wait_healthy

    secret = tmp_path / "root-only"
    secret.write_text("root:$y$j9T$secret-hash:20000:0:99999:7:::\n")
    secret.chmod(0o600)
    log = tmp_path / "mlflow.log"
    log.symlink_to(secret)
    exited = subprocess.Popen(["true"])
    exited.wait()
    with pytest.raises(AccountError) as refused:
        wait_healthy(f"http://127.0.0.1:{free_port()}", exited, 5, log)
    assert "secret-hash" not in str(refused.value) and "is a link" in str(refused.value), refused.value


def test_root_reads_no_secret_through_a_link_of_the_stacks_account(stack, base):
    # secrets.env replaced by a link to a file only root may read (another stack's secrets, say) and state.json
    # naming a port the stack's account listens on: `services status` as root read that file and sent its admin
    # password there
    from linclass.orchestration.services import SECRETS

    other = base / "another-stacks-secrets.env"
    other.write_text("".join(f"{name}=another-stacks-{name.lower()}\n" for name in SECRETS))
    other.chmod(0o600)
    secrets_file, state_file = stack.folder / "secrets.env", stack.folder / "state.json"
    port = free_port()
    forged = json.dumps({**json.loads(state_file.read_text()), "port": port})
    listener = StandIn("http", port, user="linclass-stack")
    planted = as_stack(f"cp -p {state_file} {state_file}.kept && mv {secrets_file} {secrets_file}.kept && "
                       f"ln -s {other} {secrets_file} && printf '%s' '{forged}' > {state_file}")
    try:
        assert planted.returncode == 0, planted.stderr
        status = services(stack.env, "status", check=False)
    finally:
        assert as_stack(f"rm -f {secrets_file} && mv {secrets_file}.kept {secrets_file} && "
                        f"mv {state_file}.kept {state_file}").returncode == 0
    assert listener.secrets_sent() == [], "root sent a secret it read through the link"
    assert status.returncode == 1 and status.stderr.strip() == \
        f"error: {secrets_file} is a link, not a file: root never follows a link in the stack's folder (the " \
        "stack's account, or whoever runs as it, may have planted it); remove it", status.stderr


def test_root_signals_no_process_of_another_account_that_the_stacks_state_names(base):
    # state.json names the MLflow server's pid and start time; the stack's account wrote another account's there
    # (root's own, an sshd, init): `services down` as root SIGTERMed it and everything it had started
    import psutil

    from linclass.orchestration.accounts import stack_account

    account = stack_account()
    folder = base / "forged-state"
    folder.mkdir(mode=0o700)
    os.chown(folder, account.uid, account.gid)
    env = {**os.environ, "LINCLASS_SERVICES_DIR": str(folder)}
    victims = [subprocess.Popen(["sleep", "600"], start_new_session=True),
               subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                                 "sleep", "600"], start_new_session=True)]
    try:
        for victim in victims:
            state = {"mlflow_pid": victim.pid, "mlflow_started": psutil.Process(victim.pid).create_time(),
                     "local_postgres": False, "host": "127.0.0.1", "port": free_port()}
            assert as_stack(f"printf '%s' '{json.dumps(state)}' > {folder / 'state.json'}").returncode == 0
            services(env, "down")
            time.sleep(0.5)
            assert victim.poll() is None, f"root ended another account's process ({' '.join(victim.args)})"
    finally:
        for victim in victims:
            victim.kill()
            victim.wait()


# ---- logins ----

def test_a_wrong_password_takes_the_same_time_for_known_and_unknown_users(stack):
    def wrong(name_and_round: tuple[str, int]) -> float:
        name, i = name_and_round
        status, _, _, seconds = call(stack.url, "/api/2.0/mlflow/experiments/search?max_results=1",
                                     auth=(name, f"wrong-{i}"), source="127.0.0.6")
        assert status == 401
        return seconds

    known, unknown = [], []
    # from one address, under both throttle limits; a known and an unknown user at once, in five rounds (both wait for
    # the same floor, so a pair takes one: one after the other, the ten took ten; one password check at a time)
    with ThreadPoolExecutor(2) as pool:
        for i in range(5):
            known_seconds, unknown_seconds = pool.map(wrong, [(("bob", "carol")[i % 2], i), (f"nobody-{i}", i)])
            known.append(known_seconds)
            unknown.append(unknown_seconds)
    difference = abs(statistics.median(known) - statistics.median(unknown))
    assert min(known + unknown) >= 0.5 and difference < 0.1, (known, unknown)


# The attacker: its own process, `threads` threads guessing `user`'s password `rounds` times each from `source`. It
# says "answered" once it has had as many answers as it has threads (a round: each answer comes after the guard's
# floor), then the statuses (JSON).
FLOOD = """
import base64, http.client, json, sys, threading
host, port, source, user, threads, rounds = sys.argv[1:7]
statuses, lock = [], threading.Lock()
def guess(thread):
    for i in range(int(rounds)):
        token = base64.b64encode(f"{user}:guess-{thread}-{i}".encode()).decode()
        conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
        conn.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1",
                     headers={"Authorization": "Basic " + token})
        status = conn.getresponse().status
        conn.close()
        with lock:
            statuses.append(status)
            if len(statuses) == int(threads):
                print("answered", flush=True)
workers = [threading.Thread(target=guess, args=(t,)) for t in range(int(threads))]
[w.start() for w in workers]
[w.join() for w in workers]
print(json.dumps(statuses))
"""


def test_a_password_flood_is_throttled_per_user_and_per_address(stack):
    bob, carol = login(stack, "bob"), login(stack, "carol")
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    assert call(stack.url, search, auth=carol, source="127.0.0.7")[0] == 200   # carol is logged in
    baseline = statistics.median(call(stack.url, search, auth=carol)[3] for _ in range(7))
    host, port = stack.url.removeprefix("http://").split(":")
    flood = subprocess.Popen([sys.executable, "-c", FLOOD, host, port, "127.0.0.7", "erin", "40", "4"],
                             stdout=subprocess.PIPE, text=True)
    try:
        # measured in the flood's second round, its first answered (the ten checks of the guesses it was allowed are
        # over): three rounds left, each after the guard's floor (half a second at least)
        assert flood.stdout is not None and flood.stdout.readline() == "answered\n"
        with ThreadPoolExecutor(1) as pool:
            # meanwhile erin herself must wait (her name is throttled, from any address)
            erin = pool.submit(call, stack.url, search, auth=login(stack, "erin"), source="127.0.0.9")
            during = [call(stack.url, search, auth=carol)[3] for _ in range(7)]
            status, headers, text, _ = erin.result()
        out, _ = flood.communicate(timeout=300)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    statuses = json.loads(out)
    checked = statuses.count(401)
    assert len(statuses) == 160 and checked <= 10 and statuses.count(429) == 160 - checked, statuses
    # the flood costs the others little (it made them 20x slower when every guess was checked)
    assert statistics.median(during) < 3 * baseline + 0.1, (baseline, during)
    assert status == 429 and int(headers["retry-after"]) > 0 and "retry" in text
    # carol, logged in, goes on from the flooded address; a first login from elsewhere is not held up
    assert call(stack.url, search, auth=carol, source="127.0.0.7")[0] == 200
    assert call(stack.url, search, auth=bob, source="127.0.0.9")[0] == 200
    # many names from one address: the address is throttled, also for a name never tried
    with ThreadPoolExecutor(35) as pool:
        statuses = list(pool.map(lambda i: call(stack.url, search, auth=(f"user-{i}", "x"), source="127.0.0.8")[0],
                                 range(35)))
    assert statuses.count(401) <= 30 and statuses.count(429) == 35 - statuses.count(401), statuses
    assert call(stack.url, search, auth=login(stack, "dave"), source="127.0.0.8")[0] == 429
    assert call(stack.url, search, auth=login(stack, "dave"), source="127.0.0.9")[0] == 200


def raw_login(url: str, path: str, method: str, authorization: str, source: str) -> int:
    """The status of one request whose Authorization header is sent exactly as given."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
    try:
        conn.request(method, path, body=b"", headers={"Authorization": authorization,
                                                      "Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


# Authorization headers that one of MLflow's parsers reads as user:password (werkzeug's for its Flask routes, its
# own for the FastAPI ones such as the artifact proxy's: `scheme, token = header.split()`), written the unusual ways.
HEADER_FORMS = {"tab": "Basic\t{}", "lowercase-two-spaces": "basic  {}"}
FASTAPI_ROUTE = "/api/2.0/mlflow-artifacts/artifacts/0/nothing.txt"   # MLflow's own login check (its FastAPI app)


@pytest.mark.parametrize("form", HEADER_FORMS)
def test_guesses_in_any_header_form_mlflow_reads_are_throttled(stack, form):
    name = f"guesser-{form.replace(' ', '-')}"
    add_user(stack, name)
    password = stack.user(name)["MLFLOW_TRACKING_PASSWORD"]
    header = HEADER_FORMS[form].format
    fastapi, search = FASTAPI_ROUTE, "/api/2.0/mlflow/experiments/search?max_results=1"

    def guess(attempt: tuple[int, str, str]) -> int:
        i, path, method = attempt
        return raw_login(stack.url, path, method, header(base64.b64encode(f"{name}:guess-{i}".encode()).decode()),
                         "127.0.0.10")
    # MLflow reads this form: the right password gets past its login (401 is the answer to a wrong one)
    assert raw_login(stack.url, fastapi, "GET", header(base64.b64encode(f"{name}:{password}".encode()).decode()),
                     "127.0.0.10") != 401
    # 14 guesses at once (each answer comes after the guard's floor, a second or so under load: one after the other,
    # they took 14 floors): 10 wrong passwords a user are checked, then 429, whether the 10 are still in flight or
    # done (before the fix: every guess on the FastAPI routes was checked)
    attempts = [(i, path, method) for i in range(7) for path, method in ((fastapi, "GET"), (search, "GET"))]
    with ThreadPoolExecutor(len(attempts)) as pool:
        guesses = list(pool.map(guess, attempts))
    assert guesses.count(401) <= 10 and guesses.count(429) == 14 - guesses.count(401), guesses
    # and the checked ones were counted as failures, not only while in flight: a guess after them waits too
    with ThreadPoolExecutor(2) as pool:
        later = list(pool.map(guess, [(7, fastapi, "GET"), (8, search, "GET")]))
    assert later == [429, 429], later


def test_of_two_authorization_headers_mlflow_checks_the_one_the_throttle_counts(stack):
    """The guard reads the last Authorization header, MLflow the first: MLflow must get the guard's."""
    right, wrong = (base64.b64encode(f"{user}:{password}".encode()).decode()
                    for user, password in (login(stack, "carol"), ("carol", "a-guess")))
    host, port = stack.url.removeprefix("http://").split(":")
    for path in (FASTAPI_ROUTE, "/api/2.0/mlflow/experiments/search?max_results=1"):
        conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=("127.0.0.11", 0))
        try:
            conn.putrequest("GET", path)
            for header in (f"Basic {right}", f"Basic {wrong}"):
                conn.putheader("Authorization", header)
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            assert conn.getresponse().status == 401, path   # the wrong password was checked, not the right one
        finally:
            conn.close()
    # the right password first, then a header the guard cannot read: MLflow must not check the first unthrottled
    for second in ("x", "Bearer y"):
        conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=("127.0.0.11", 0))
        try:
            conn.putrequest("GET", FASTAPI_ROUTE)
            for header in (f"Basic {right}", second):
                conn.putheader("Authorization", header)
            conn.putheader("Content-Length", "0")
            conn.endheaders()
            assert conn.getresponse().status == 401, second
        finally:
            conn.close()


# ---- errors: no database text, no 500 for a malformed request ----

MALFORMED = [("/graphql", "{"), ("/graphql", "[1]"), ("/graphql", '{"query": 5}'), ("/graphql", '{"query": "{"}'),
             ("/graphql", '{"query": "query { mlflowGetExperiment(input: {experimentId: \\"0\\"}) '
                          '{ experiment { name } } }", "variables": 5}'), ("/graphql", "{}"),
             ("/api/2.0/mlflow/runs/search", '"x"'), ("/api/2.0/mlflow/runs/search", "{"),
             ("/api/2.0/mlflow/runs/log-batch", '{"run_id": "x", "metrics": [5]}'),
             ("/api/3.0/mlflow/traces/search", "[1]"), ("/ajax-api/2.0/mlflow/runs/search", "[[[")]


def test_malformed_json_and_graphql_get_a_400(stack, control):
    control_statuses = [call(control, path, "POST", body)[0] for path, body in MALFORMED]
    assert 500 in control_statuses, control_statuses   # MLflow's own server fails on them
    bob = login(stack, "bob")
    for path, body in MALFORMED:
        status, _, text, _ = call(stack.url, path, "POST", body, bob)
        assert status == 400 and json.loads(text)["error_code"] == "INVALID_PARAMETER_VALUE", (path, body, status)
    assert call(stack.url, "/graphql?query=%7B", auth=bob)[0] == 400
    status, _, text, _ = call(stack.url, "/graphql", "POST",
                              {"query": '{ mlflowGetExperiment(input: {experimentId: "0"}) { experiment { name } } }'},
                              bob)
    assert status == 200 and json.loads(text)["data"] is not None   # a well-formed query still works


def test_error_answers_carry_no_database_text(stack, control):
    duplicate = {"name": "twice"}
    for url, auth in ((control, None), (stack.url, login(stack, "bob"))):
        call(url, "/api/2.0/mlflow/experiments/create", "POST", duplicate, auth)
    status, _, text, _ = call(control, "/api/2.0/mlflow/experiments/create", "POST", duplicate)
    assert status == 400 and "[SQL:" in text, "MLflow's own server echoes the SQL statement"
    bob = login(stack, "bob")
    attempts = [("/api/2.0/mlflow/experiments/create", duplicate),
                ("/ajax-api/2.0/mlflow/experiments/create", duplicate),
                ("/api/2.0/mlflow/registered-models/create", {"name": "model-twice"}),
                ("/api/2.0/mlflow/registered-models/create", {"name": "model-twice"})]
    answers = [call(stack.url, path, "POST", body, bob) for path, body in attempts]
    assert answers[2][0] == 200
    for (path, _), (_, _, text, _) in zip(attempts, answers):
        assert not any(marker in text for marker in SQL_MARKERS), (path, text)
    assert answers[0][0] == 400 and "already exists" in json.loads(answers[0][2])["message"]
    assert answers[3][0] == 400 and "already exists" in json.loads(answers[3][2])["message"]
    assert "[SQL:" in (stack.folder / "mlflow.log").read_text(), "the server's own log keeps the details"


# ---- what held before must still hold ----

def test_per_object_permissions_hold_through_graphql_and_the_artifact_proxy(stack):
    admin, bob = login(stack, "admin"), login(stack, "bob")
    status, _, text, _ = call(stack.url, "/api/2.0/mlflow/experiments/create", "POST", {"name": "admin-only"}, admin)
    experiment_id = json.loads(text)["experiment_id"]
    run_id = json.loads(call(stack.url, "/api/2.0/mlflow/runs/create", "POST", {"experiment_id": experiment_id},
                             admin)[2])["run"]["info"]["run_id"]
    artifact = f"{experiment_id}/{run_id}/artifacts/model.txt"
    assert call(stack.url, f"/api/2.0/mlflow-artifacts/artifacts/{artifact}", "PUT", b"weights", admin)[0] == 200
    for path in (f"/api/2.0/mlflow-artifacts/artifacts/{artifact}",
                 f"/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact}",
                 f"/api/2.0/mlflow-artifacts/artifacts/0/x/%2e%2e/%2e%2e/{artifact}",
                 f"/api/2.0/mlflow-artifacts/artifacts/0/../{artifact}",
                 f"/api/2.0/mlflow-artifacts/artifacts?path={experiment_id}/{run_id}/artifacts",
                 f"/get-artifact?path=model.txt&run_uuid={run_id}"):
        status, _, text, _ = call(stack.url, path, auth=bob)
        assert status in (400, 403, 404) and "weights" not in text, (path, status, text[:200])
    query = {"query": f'{{ mlflowGetRun(input: {{runId: "{run_id}"}}) {{ run {{ info {{ runName }} }} }} }}'}
    status, _, text, _ = call(stack.url, "/graphql", "POST", query, bob)
    assert not ((json.loads(text).get("data") or {}).get("mlflowGetRun") or {}).get("run"), text
    assert call(stack.url, f"/api/2.0/mlflow/runs/get?run_id={run_id}", auth=bob)[0] == 403
    assert call(stack.url, f"/api/2.0/mlflow/runs/get?run_id={run_id}", auth=admin)[0] == 200
