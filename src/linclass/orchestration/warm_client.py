"""Run a Python command in the warm interpreter (linclass.orchestration.warm) when one serves this workspace,
else exactly as `python` would. Standard library only: it runs as `python -I -S warm_client.py ARGS`.

    warm_client.py pipeline/train.py [arg ...]      # a script
    warm_client.py -m dvc exp run ...                # a module

$LINCLASS_WARM_SOCKET names the warm interpreter's socket. The command gets this process's standard
input, output and error, its working directory and environment; the signals this process receives
(SIGTERM, SIGINT, SIGHUP) go to the command's process group, those this process ignores (nohup) stay
ignored in the command too, and this process exits as the command did (same code, or killed by the
same signal). If this process is killed outright, the command's side
notices the closed connection and stops itself (SIGTERM, then SIGKILL after 10 s). A socket that another
account listens on gets nothing (not the environment, not the streams), nor one in a folder that is not this
account's own and private (another account that made the folder again, once the interpreter had removed it, with
a socket that never accepts, held the client in connect() for as long as it liked): the command runs fresh.
"""
import json
import os
import signal
import socket
import stat
import struct
import sys

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
CONNECT_SECONDS = 10.0   # a warm interpreter still importing accepts once done; its backlog takes 64 meanwhile


def fallback(argv: list[str]) -> None:
    """Run the command in a fresh interpreter instead (this process becomes it)."""
    python = os.environ.get("LINCLASS_WARM_PYTHON") or sys.executable
    os.execv(python, [python, *argv])


def server_uid(conn: socket.socket) -> int:
    """The account of the process listening at the other end (SO_PEERCRED: the kernel's, not a claim). The
    socket's folder is private while its interpreter runs, but its name is not: once the interpreter stops and
    removes the folder, another account can make one of that name with a socket of its own, and would get the
    request's environment (tokens) and standard streams (a terminal)."""
    _, uid, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def private_folder(path: str) -> bool:
    """Whether the socket's folder is this account's, not a link, and closed to every other account."""
    try:
        st = os.lstat(os.path.dirname(os.path.abspath(path)))
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def ask(path: str, argv: list[str]):
    """Send the request; the connection's reader once the command runs, None when the interpreter declines."""
    if not private_folder(path):
        return None
    ignored = [int(sig) for sig in SIGNALS if signal.getsignal(sig) == signal.SIG_IGN]   # e.g. SIGHUP under nohup
    # the command's environment names this process: a stage finds the `dvc` that runs it among its parents
    env = {**os.environ, "LINCLASS_WARM_CLIENT_PID": str(os.getpid())}
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": env, "python": sys.executable,
                          "ignored": ignored}).encode()
    relayed = [sig for sig in SIGNALS if int(sig) not in ignored]
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(CONNECT_SECONDS)
        conn.connect(path)
        conn.settimeout(None)
        if server_uid(conn) != os.getuid():
            raise OSError("not a warm interpreter of this account")
        # held from the request on until the command's pid is known, then relayed to it (the command may run, and be
        # signalled, before its pid arrives here); unblocked at once when it is declined, before this process
        # becomes a fresh python
        signal.pthread_sigmask(signal.SIG_BLOCK, relayed)
        socket.send_fds(conn, [struct.pack("!I", len(request)) + request], [0, 1, 2])
        reader = conn.makefile("rb")
        answer = json.loads(reader.readline() or b"{}")
    except (OSError, ValueError):
        answer = {}
    if "pid" not in answer:
        conn.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, relayed)
        return None
    pid = answer["pid"]

    def forward(signum, frame):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    for sig in relayed:
        signal.signal(sig, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, relayed)
    return reader


def main() -> None:
    argv = sys.argv[1:]
    path = os.environ.get("LINCLASS_WARM_SOCKET")
    reader = ask(path, argv) if path else None
    if reader is None:
        fallback(argv)
        return
    try:
        status = json.loads(reader.readline())
    except (OSError, ValueError):
        status = {}
    if "signal" in status:
        signal.signal(status["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), status["signal"])
    if "exit" not in status:
        print("error: the warm interpreter went away while it ran the command", file=sys.stderr)
        sys.exit(1)
    sys.exit(status["exit"])


if __name__ == "__main__":
    main()
