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

Root acts in that folder (`services up`, `add-user`, `status`, `down`) but never through a link in it: whoever runs
as the stack's account (an MLflow server someone took over) may replace its files and folders by links to root's
(users/ -> /etc), and root would otherwise give what it finds there to that account, or write and read there. The
folders and files are opened without following a link (O_NOFOLLOW, relative to their opened parent), and a link
where one of them should be is one line (AccountError) that names it.
"""
from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
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
        other = {} if self.is_me else {"user": self.uid, "group": self.gid, "extra_groups": []}
        return {**other, "umask": PRIVATE_UMASK}


def last_line(text: str) -> str:
    """The last line of a command's output (its error, usually), or "no output"."""
    return (text.strip().splitlines() or ["no output"])[-1]


def _found_or_made(lookup, name: str, cmd: list[str]):
    """lookup(name) (pwd.getpwnam, grp.getgrnam), made first by useradd/groupadd `cmd` when there is none; losing a
    race to another process creating the same name is fine."""
    try:
        return lookup(name)
    except KeyError:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        return lookup(name)
    except KeyError:
        raise AccountError(f"{' '.join(cmd)} failed: {last_line(proc.stderr or proc.stdout)}") from None


def stack_account() -> Account:
    """The account PostgreSQL and MLflow run as: this user, or (as root) the unprivileged stack account."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return Account(me.pw_name, me.pw_uid, me.pw_gid, os.environ.get("HOME", me.pw_dir))
    name = os.environ.get("LINCLASS_STACK_USER", STACK_USER)
    home = f"/var/lib/{name}"
    entry = _found_or_made(pwd.getpwnam, name, ["useradd", "--system", "--user-group", "--create-home", "--home-dir",
                                                 home, "--shell", "/usr/sbin/nologin", "--comment",
                                                 "linclass team stack", name])
    if entry.pw_uid == 0:
        raise AccountError(f"LINCLASS_STACK_USER={name!r} is root: the stack never runs as root")
    home = entry.pw_dir if entry.pw_dir not in ("", "/", "/nonexistent") else home
    if not os.path.isdir(home):
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    return Account(name, entry.pw_uid, entry.pw_gid, home)


def team_group() -> grp.struct_group:
    """The group that may use the DVC remote."""
    name = os.environ.get("LINCLASS_TEAM_GROUP")
    if os.geteuid() == 0:
        return _found_or_made(grp.getgrnam, name or TEAM_GROUP, ["groupadd", "--system", name or TEAM_GROUP])
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


LINK_PLANTED = ("root never follows a link in the stack's folder (the stack's account, or whoever runs as it, may "
                "have planted it); remove it")


def open_folder(path: Path) -> int:
    """A file descriptor of folder `path`, opened without following a link at its last component (AccountError)."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and path.is_symlink():
            raise AccountError(f"{path} is a link, not a folder: {LINK_PLANTED}") from None
        raise


def _open_in(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open of `path`'s last component relative to its parent (open_folder), never through a link."""
    parent = open_folder(path.parent)
    try:
        return os.open(path.name, flags | os.O_NOFOLLOW, mode, dir_fd=parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AccountError(f"{path} is a link, not a file: {LINK_PLANTED}") from None
        raise
    finally:
        os.close(parent)


def write_private(path: Path, text: str, account: Account) -> None:
    """Write `text` to `path` atomically: 0600, owned by `account`; never through a link (AccountError)."""
    parent = open_folder(path.parent)
    try:
        tmp = f".{path.name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=parent)   # (a link is removed, not followed)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
        with os.fdopen(fd, "w") as f:
            _own(f.fileno(), account)
            f.write(text)
        os.replace(tmp, path.name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def read_private(path: Path) -> str | None:
    """The text of file `path` (None when there is none), never read through a link (AccountError): root reads the
    stack's secrets and state from a folder that the stack's account may fill with links to root's files."""
    try:
        fd = _open_in(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, errors="replace") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AccountError(f"{path} is not a file: {LINK_PLANTED}")
        return f.read()


def open_private_log(path: Path, account: Account) -> int:
    """A file descriptor appending to log `path` (0600, owned by `account`), never through a link."""
    fd = _open_in(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _own(fd, account)
    return fd


@contextlib.contextmanager
def made_folder(path: Path):
    """Folder `path` (made with its parents if missing) as an open file descriptor; a link there is refused."""
    with contextlib.suppress(FileExistsError):   # (a link stays, and open_folder refuses it)
        path.mkdir(parents=True)
    fd = open_folder(path)
    try:
        yield fd
    finally:
        os.close(fd)


def private_dir(path: Path, account: Account) -> None:
    """`path` exists as a folder of `account`, 0700 (its parents as they are); a link there is refused."""
    with made_folder(path) as fd:
        wrong = _wrong(os.fstat(fd), account, 0o700)
    if wrong:
        _own_tree(path, account)


def _wrong(st: os.stat_result, account: Account, mode: int) -> bool:
    return st.st_uid != account.uid or (st.st_mode & 0o7777) != mode


def refuse_strangers(path: Path, account: Account, skip: Path | None = None) -> None:
    """AccountError (one line) when `path` or anything in it (links included, `skip` and what is in it left out)
    belongs to an account other than root, the caller and `account`: another account may have made it before the
    stack did (a secrets.env of passwords it knows, a database whose settings run its commands), and the stack
    would take it over; or when a file there has another name elsewhere (a hard link to /etc/shadow, given to the
    stack's account with it). Checked before anything is changed."""
    allowed = {0, os.geteuid(), account.uid}

    def wrong(name: str | Path, folder_fd: int | None = None) -> bool:
        try:
            st = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:   # gone meanwhile (a running PostgreSQL's temporary files)
            return False
        return st.st_uid not in allowed or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)

    found = path if wrong(path) else None
    if found is None and path.is_dir() and not path.is_symlink():
        for folder, dirs, files, folder_fd in os.fwalk(path, follow_symlinks=False):
            dirs[:] = [name for name in dirs if Path(folder, name) != skip]
            found = next((Path(folder, name) for name in dirs + files if wrong(name, folder_fd)), None)
            if found is not None:
                break
    if found is None:
        return
    st = found.lstat()
    if st.st_uid in allowed:
        raise AccountError(f"{found} is a hard link ({st.st_nlink} names): root never gives a file that has another "
                           "name to the stack's account; remove it")
    raise AccountError(f"{found} belongs to {describe_uids({st.st_uid})}, not to the stack's account {account.name}: "
                       "another account may have put it there, for the stack to take over; remove it (or, if it is "
                       "a stack you ran as that account, give it to this one: chown -R)")


def _own_tree(path: Path, account: Account) -> None:
    """Give the tree at `path` to `account` and take every right of group and others away (symbolic links
    are neither followed nor changed; the mode change runs as `account`, which can only touch its own)."""
    refuse_strangers(path, account)
    if not account.is_me:
        os.chown(path, account.uid, account.gid, follow_symlinks=False)
        # fwalk: no link is followed, the top either (os.walk listed the folder a link at `path` pointed to)
        for _, dirs, files, folder_fd in os.fwalk(path, follow_symlinks=False):
            for name in dirs + files:
                os.chown(name, account.uid, account.gid, dir_fd=folder_fd, follow_symlinks=False)
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
        if _wrong(entry.lstat(), account, 0o700 if entry.is_dir() else 0o600):
            _own_tree(entry, account)
    if dvc_remote is not None:
        shared_dir(dvc_remote, account, team)
    os.chown(folder, account.uid, team.gr_gid, follow_symlinks=False)
    folder.chmod(0o710 if inside else 0o700)


def shared_dir(path: Path, account: Account, team: grp.struct_group) -> None:
    """`path` for the team: owned by `account`, group `team`, 2770 (new files and folders keep the group); a link
    there is refused (chmod followed it)."""
    with made_folder(path) as fd:
        os.fchown(fd, account.uid, team.gr_gid)
        os.fchmod(fd, 0o2770)


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
