"""A Ray cluster on this machine, for trying out and testing the Ray sweep backend: a head node and
worker node(s) on different loopback addresses, one CPU each, no dashboard.

    linclass cluster up        # head 127.0.0.2:6390, worker 127.0.0.3
    linclass cluster status
    linclass cluster down
    linclass cluster up --head 127.0.0.2 --workers 127.0.0.3,127.0.0.4 --port 6390

Ray rewrites 127.0.0.1 to the machine's outside address, hence 127.0.0.2 and up (all of 127.0.0.0/8
is loopback on Linux). Each node is one `ray start --block` in a session of its own: stopping a node
is SIGTERM to that process (Ray stops its raylet and workers), and `kill_node` SIGKILLs every
process of the session at once (raylet, workers, and what the workers started), which is what a
machine that dies looks like to the rest of the cluster. The state (address, node pids, logs, Ray's
temp dir) lives in /tmp/linclass-ray-<uid>-<port>/ (short: Ray's socket paths must stay under 108 bytes), a
folder of this user's own, 0700: Ray makes the folders of its temp dir 0777 (its sockets, the runtime
environments its workers load, the logs), so only a private folder around them keeps other accounts out.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from linclass.orchestration.accounts import describe_uids, last_line, strangers_listening

DEFAULT_HEAD = "127.0.0.2"
DEFAULT_WORKERS = ("127.0.0.3",)
DEFAULT_PORT = 6390
DEFAULT_ADDRESS = f"{DEFAULT_HEAD}:{DEFAULT_PORT}"
OBJECT_STORE_BYTES = 80 * 1024 * 1024   # the sweep passes only small dicts through it


class ClusterError(RuntimeError):
    """The cluster could not start or be found; the message is one line and says what to do."""


@dataclass
class Node:
    ip: str
    pid: int            # the `ray start --block` process, leader of the node's session
    log: str
    head: bool = False


@dataclass
class Cluster:
    port: int
    state_dir: str
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.head.ip}:{self.port}"

    @property
    def head(self) -> Node:
        return next(node for node in self.nodes if node.head)

    def save(self) -> None:
        Path(self.state_dir, "cluster.json").write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, port: int = DEFAULT_PORT) -> Cluster:
        path = state_dir(port) / "cluster.json"
        if not path.exists():
            raise ClusterError(f"no cluster was started on port {port} (no {path}); "
                               "start one with `make cluster-up`")
        private_folder(path.parent, STATE_ELSEWHERE)   # the pids it names are signalled: not another account's
        data = json.loads(path.read_text())
        return cls(data["port"], data["state_dir"], [Node(**node) for node in data["nodes"]])


def state_dir(port: int) -> Path:
    return Path("/tmp") / f"linclass-ray-{os.getuid()}-{port}"


STATE_ELSEWHERE = "remove it, or start the cluster on another --port"


def private_folder(path: Path, instead: str) -> Path:
    """`path`, made (0700) or made private (0700) when it is this user's own; ClusterError (one line, ending with
    `instead`: what to do) when it is another account's or a link. What lives in it runs or steers code as this
    user (a node's workspaces run git and Python; Ray's sockets and runtime environments): another account that
    made the folder first could plant files there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if path.is_symlink() or info.st_uid != os.getuid():
        raise ClusterError(f"{path} is not a folder of this user's own (a link, or owner uid {info.st_uid}): "
                           f"{instead}")
    path.chmod(0o700)   # made by an older linclass: 0755
    return path


def _ray() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


# Ray's token authentication, off by default before Ray 2.61: without it any account that reaches the cluster's
# addresses can join it as a node or send it work, which runs as this user. Nodes, their tasks and the drivers
# (linclass.orchestration.ray_backend) use this user's token.
AUTH = {"RAY_AUTH_MODE": "token"}


def node_env(extra: dict | None = None) -> dict:
    """What every node (and so every task it runs) sees: this virtualenv first on PATH, no usage stats, Ray's
    token authentication (ensure_token), and no drain on SIGTERM: Ray 2.60's `ray start --block` first waits up
    to 30 s for the node to drain (for Ray Serve's proxies), which never happens while a node's warm keeper (a
    detached actor, linclass.orchestration.ray_backend) lives, so every node with one took stop_node's whole
    grace to stop."""
    env = dict(os.environ)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0", DVC_NO_ANALYTICS="1", OPENBLAS_NUM_THREADS="1",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0", **AUTH)
    env.pop("RAY_ADDRESS", None)
    env.update(extra or {})
    return env


def ensure_token() -> Path | None:
    """This user's Ray token file (Ray's own place, ~/.ray/auth_token, or $RAY_AUTH_TOKEN_PATH), made once with
    a random token, private (0600), and atomically: two clusters started at once share one token. None when
    $RAY_AUTH_TOKEN gives the token itself."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(draft, path)   # whole or not at all; another process's token, made meanwhile, wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    path.chmod(0o600)   # one that `ray get-auth-token --generate` made is 0644
    return path


def _start_node(args: list[str], ip: str, directory: Path, env: dict, head: bool) -> Node:
    log_path = directory / f"node-{ip}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([_ray(), "start", "--block", f"--node-ip-address={ip}", *args],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    return Node(ip, proc.pid, str(log_path), head)


def _port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def check_head_is_mine(host: str, port: int) -> None:
    """ClusterError (one line) when another account's process listens at the head's address on this machine.
    Every node and driver sends Ray's token to the head in every request: a stand-in that another account started
    on the port before the head (or after it stopped) would receive the token, and with it the right to run
    anything as this user on every cluster of this user's."""
    strangers = strangers_listening(host, port, {os.getuid()})
    if strangers:
        raise ClusterError(f"{host}:{port} is held by another account's process ({describe_uids(strangers)}), not by "
                           "a Ray head of yours: it would get your Ray token; start your cluster on another port "
                           "(linclass cluster up --port)")


WAIT_FOR_NODES = """
import sys, time, ray
address, wanted, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
while sum(node["Alive"] for node in ray.nodes()) < wanted:
    if time.monotonic() > deadline:
        sys.exit(f"only {sum(node['Alive'] for node in ray.nodes())} of {wanted} nodes joined")
    time.sleep(0.5)
"""


def running(pid: int) -> bool:
    """The process runs: not gone, and not a zombie (a child that ended, not yet reaped: a node this process
    started, a warm interpreter of a node's keeper; psutil.pid_exists is True for it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:   # another user's process: it exists
        return True


def alive_nodes(cluster: Cluster) -> list[Node]:
    return [node for node in cluster.nodes if running(node.pid)]


def start(head: str = DEFAULT_HEAD, workers: tuple[str, ...] = DEFAULT_WORKERS, port: int = DEFAULT_PORT,
          cpus: int = 1, env: dict | None = None, node_envs: dict[str, dict] | None = None,
          system_config: dict | None = None, timeout: float = 120) -> Cluster:
    """Start a head and worker nodes (`cpus` CPUs each); return when all of them joined.

    `node_envs` adds environment variables per node address (e.g. a per-node work folder);
    `system_config` (head only) tunes Ray, e.g. how fast a dead node is noticed.
    """
    directory = state_dir(port)
    if (directory / "cluster.json").exists() and alive_nodes(Cluster.load(port)):
        raise ClusterError(f"a cluster already runs on port {port} ({directory}); stop it with `linclass cluster down`")
    ensure_token()
    shutil.rmtree(private_folder(directory, STATE_ELSEWHERE))   # an earlier cluster's logs
    private_folder(directory, STATE_ELSEWHERE)
    cluster = Cluster(port, str(directory))
    common = [f"--num-cpus={cpus}", f"--object-store-memory={OBJECT_STORE_BYTES}",
              f"--temp-dir={directory / 'ray'}", "--disable-usage-stats"]
    head_args = ["--head", f"--port={port}", "--include-dashboard=false", *common]
    if system_config:
        head_args.append(f"--system-config={json.dumps(system_config)}")
    envs = node_envs or {}
    try:
        cluster.nodes.append(_start_node(head_args, head, directory, node_env({**(env or {}), **envs.get(head, {})}),
                                         head=True))
        cluster.save()
        deadline = time.monotonic() + timeout
        while not _port_open(head, port):
            if not running(cluster.head.pid) or time.monotonic() > deadline:
                raise ClusterError(f"the Ray head on {head}:{port} did not start; see {cluster.head.log}")
            time.sleep(0.3)
        check_head_is_mine(head, port)   # before any node or driver sends it the token
        for ip in workers:
            cluster.nodes.append(_start_node([f"--address={cluster.address}", *common], ip, directory,
                                             node_env({**(env or {}), **envs.get(ip, {})}), head=False))
            cluster.save()
        waited = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, cluster.address, str(len(cluster.nodes)),
                                 str(max(deadline - time.monotonic(), 1))],
                                capture_output=True, text=True, env=node_env())
        if waited.returncode != 0:
            raise ClusterError(f"the cluster at {cluster.address} did not come up: "
                               f"{last_line(waited.stderr)}; logs in {directory}")
    except BaseException:
        stop(cluster, keep_logs=True)   # the logs say why
        raise
    return cluster


def kill_node(node: Node) -> int:
    """SIGKILL every process of the node's session at once (a machine that dies); return how many."""
    victims = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == node.pid:
                victims.append(process)
    for process in victims:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return len(victims)


def stop_node(node: Node, grace: float = 20) -> None:
    """SIGTERM the node (Ray stops its processes), then SIGKILL whatever of its session is left."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while running(node.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_node(node)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(node.pid, 0)


def stop(cluster: Cluster, keep_logs: bool = False) -> None:
    """Workers first, then the head; then its state folder (node logs, Ray's temp dir) goes too."""
    for node in sorted(cluster.nodes, key=lambda node: node.head):
        stop_node(node)
    if not keep_logs:
        shutil.rmtree(cluster.state_dir, ignore_errors=True)


def start_checked(head: str, workers: tuple[str, ...], port: int, cpus: int) -> Cluster:
    """start() on loopback addresses other than 127.0.0.1 only (Ray rewrites 127.0.0.1)."""
    for ip in (head, *workers):
        with contextlib.suppress(ValueError):
            if ipaddress.IPv4Address(ip).is_loopback and ip != "127.0.0.1":
                continue
        raise ClusterError(f"node address {ip!r} is not allowed: give loopback addresses 127.0.0.2 and up "
                           "(Ray rewrites 127.0.0.1)")
    return start(head, workers, port, cpus)


def status_lines(cluster: Cluster) -> list[str]:
    return [f"{'head  ' if node.head else 'worker'} {node.ip:<12} pid {node.pid:<8} "
            f"{'up' if running(node.pid) else 'DOWN'}  log {node.log}" for node in cluster.nodes]
