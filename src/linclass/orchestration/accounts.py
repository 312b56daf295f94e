"""Who the team stack runs as, and who may read its files.

Started by a normal user, the stack runs as that user. Started by root, PostgreSQL and the MLflow server
run as an unprivileged system account (LINCLASS_STACK_USER, default linclass-stack, created if missing)
with a HOME of its own (/var/lib/<name>): never as root.

Everything under the stack's folder belongs to that account, folders 0700 and files 0600, logs included;
the one exception is the DVC remote folder, 2770 with the team's group (LINCLASS_TEAM_GROUP; as root the
default linclass-team is created if missing, otherwise the user's primary group): a teammate reads and
writes it once in that group (`usermod -aG linclass-team alice`, then a new login), everyone else cannot.
Whenever the DVC remote lies inside the folder, the folder is 0710 with that group, so that teammates may
pass through it (not list it) on their way to the remote.
"""
from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

STACK_USER = "linclass-stack"
TEAM_GROUP = "linclass-team"
PRIVATE_UMASK = 0o077


class AccountError(RuntimeError):
    """The stack's account or group cannot be set up; the message is one line."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_me(self) -> bool:
        return self.uid == os.geteuid()

    def env(self) -> dict[str, str]:
        """The environment a process of this account starts with (nothing of the caller's but PATH)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
                "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}

    def popen_args(self) -> dict:
        """subprocess arguments that run a command as this account, with files private by default."""
        if self.is_me:
            return {"umask": PRIVATE_UMASK}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "umask": PRIVATE_UMASK}


def last_line(text: str) -> str:
    """The last line of a command's output (its error, usually), or "no output"."""
    return (text.strip().splitlines() or ["no output"])[-1]


def _create(cmd: list[str], exists) -> None:
    """Run useradd/groupadd `cmd`; losing a race to another process creating the same name is fine."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        try:
            exists()
        except KeyError:
            raise AccountError(f"{' '.join(cmd)} failed: {last_line(proc.stderr or proc.stdout)}") from None


def stack_account() -> Account:
    """The account PostgreSQL and MLflow run as: this user, or (as root) the unprivileged stack account."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return Account(me.pw_name, me.pw_uid, me.pw_gid, os.environ.get("HOME", me.pw_dir))
    name = os.environ.get("LINCLASS_STACK_USER", STACK_USER)
    home = f"/var/lib/{name}"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _create(["useradd", "--system", "--user-group", "--create-home", "--home-dir", home,
                 "--shell", "/usr/sbin/nologin", "--comment", "linclass team stack", name], lambda: pwd.getpwnam(name))
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise AccountError(f"LINCLASS_STACK_USER={name!r} is root: the stack never runs as root")
    home = entry.pw_dir if entry.pw_dir not in ("", "/", "/nonexistent") else home
    if not os.path.isdir(home):
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return Account(name, entry.pw_uid, entry.pw_gid, home)


def team_group(account: Account) -> grp.struct_group:
    """The group that may use the DVC remote."""
    name = os.environ.get("LINCLASS_TEAM_GROUP")
    if os.geteuid() == 0:
        name = name or TEAM_GROUP
        try:
            return grp.getgrnam(name)
        except KeyError:
            _create(["groupadd", "--system", name], lambda: grp.getgrnam(name))
            return grp.getgrnam(name)
    if not name:
        return grp.getgrgid(os.getegid())
    try:
        group = grp.getgrnam(name)
    except KeyError:
        raise AccountError(f"LINCLASS_TEAM_GROUP={name!r}: no such group") from None
    if group.gr_gid not in os.getgroups() and group.gr_gid != os.getegid():
        raise AccountError(f"LINCLASS_TEAM_GROUP={name!r}: you are not in that group (see `id`)")
    return group


def _own(fd: int, account: Account) -> None:
    """The file open at `fd`: 0600, owned by `account` (also if it was not before)."""
    os.fchmod(fd, 0o600)
    if not account.is_me:
        os.fchown(fd, account.uid, account.gid)


def write_private(path: Path, text: str, account: Account) -> None:
    """Write `text` to `path` atomically: 0600, owned by `account`."""
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600), "w") as f:
        _own(f.fileno(), account)
        f.write(text)
    os.replace(tmp, path)


def open_private_log(path: Path, account: Account) -> int:
    """A file descriptor appending to log `path` (0600, owned by `account`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    _own(fd, account)
    return fd


def private_dir(path: Path, account: Account) -> None:
    """`path` exists as a folder of `account`, 0700 (its parents as they are)."""
    path.mkdir(parents=True, exist_ok=True)
    if _wrong(path.lstat(), account, 0o700):
        _own_tree(path, account)


def _wrong(st: os.stat_result, account: Account, mode: int) -> bool:
    return st.st_uid != account.uid or (st.st_mode & 0o7777) != mode


def _own_tree(path: Path, account: Account) -> None:
    """Give the tree at `path` to `account` and take every right of group and others away (symbolic links
    are neither followed nor changed; the mode change runs as `account`, which can only touch its own)."""
    if not account.is_me:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(folder, name), account.uid, account.gid, follow_symlinks=False)
    proc = subprocess.run(["chmod", "-R", "u+rwX,go-rwx", "--", str(path)], capture_output=True, text=True,
                          **account.popen_args())
    if proc.returncode != 0:
        raise AccountError(f"cannot make {path} private: {last_line(proc.stderr)}")


def make_private(folder: Path, account: Account, team: grp.struct_group, dvc_remote: Path | None) -> None:
    """The stack's folder as the module docstring says: each entry that is not private yet is made so
    (a stack made by an earlier version, files copied in); the DVC remote folder (top only) for the team."""
    folder.mkdir(parents=True, exist_ok=True)
    inside = dvc_remote is not None and dvc_remote.parent == folder
    for entry in folder.iterdir():
        if inside and entry == dvc_remote or entry.is_symlink():
            continue
        st = entry.lstat()
        if _wrong(st, account, 0o700 if entry.is_dir() else 0o600):
            _own_tree(entry, account)
    if dvc_remote is not None:
        shared_dir(dvc_remote, account, team)
    os.chown(folder, account.uid, team.gr_gid, follow_symlinks=False)
    folder.chmod(0o710 if inside else 0o700)


def shared_dir(path: Path, account: Account, team: grp.struct_group) -> None:
    """`path` for the team: owned by `account`, group `team`, 2770 (new files and folders keep the group)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, account.uid, team.gr_gid, follow_symlinks=False)
    path.chmod(0o2770)


def _local_addresses(host: str) -> set[str]:
    """The addresses `host` resolves to that are this machine's own (loopback, or an interface's)."""
    try:
        resolved = {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except OSError:
        return set()
    own = {address.address.split("%")[0] for addresses in psutil.net_if_addrs().values() for address in addresses}
    return {ip for ip in resolved if ip in own or ip.startswith("127.") or ip == "::1"}


def strangers_listening(host: str, port: int, owners: set[int]) -> set[int | None]:
    """The uids, not in `owners`, of the processes listening where a connection to host:port on this machine goes
    (None: a process this user cannot see, so another account's); empty for another machine's address.

    A client that sends a secret (a password, a token) to a port of this machine must first know who listens
    there: any account may listen on a free port, before the server starts or after it stopped."""
    ips = _local_addresses(host)
    wanted = {*ips, *(f"::ffff:{ip}" for ip in ips), "0.0.0.0", "::"} if ips else set()
    return {socket_owner(conn) for conn in psutil.net_connections(kind="tcp") if conn.status == psutil.CONN_LISTEN
            and conn.laddr and conn.laddr.port == port and conn.laddr.ip in wanted} - owners


def socket_owner(conn) -> int | None:
    """The uid of the process holding `conn` (a psutil connection); None for a process this user cannot see,
    so another account's."""
    if not conn.pid:   # psutil.Process(None) would be this very process
        return None
    try:
        return psutil.Process(conn.pid).uids().real
    except psutil.Error:
        return None


def describe_uids(uids: set[int | None]) -> str:
    return ", ".join(sorted(f"uid {uid}" if uid is not None else "an account this user cannot see" for uid in uids))
