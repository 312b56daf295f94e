"""`make push` / `make pull`: the team's DVC remote, checked before anything moves.

    linclass push [-r NAME]   # dvc push --run-cache
    linclass pull [-r NAME]   # dvc pull --run-cache, then dvc status

A push warns when dvc.lock, or an output that DVC leaves to git (`cache: false`: metrics, small plots), is
not committed: a teammate's clone knows which outputs to pull only from its commit's dvc.lock, and gets
the others from git. It warns too when what dvc.lock recorded the results from differs from the commit
(params.yaml after `make exp`, a script or a data file git carries): the teammate's clone has the outputs, but
its `dvc status` finds those stages changed, and `make repro` runs them again with the commit's settings. A
pull into a checkout with no dvc.lock says that this is the cause.

The remote (the default one, or NAME) must answer first: an S3 endpoint or an http/ssh host must
accept a connection, a shared folder must be there (DVC would otherwise create a fresh, empty folder
where an unmounted share should be). When it does not, one line names the remote and what is down,
and nothing is sent, fetched or changed: the local cache and the workspace stay as they were, and the
same command completes once the remote is back. A failure in the middle of a transfer is one line
too; DVC transfers content-addressed objects, so running it again sends only what is missing.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from urllib.parse import urlsplit

from linclass.orchestration.sweep import dvc_executable, error_line
from linclass.redact import redact_url

DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "s3": 443, "gs": 443, "azure": 443}


class RemoteError(RuntimeError):
    """The DVC remote cannot be used; the message is one line and says what to do."""


@dataclass(frozen=True)
class Remote:
    name: str
    url: str                    # as configured (a local folder made absolute)
    endpoint: str | None        # S3-compatible endpoint URL, when not AWS

    def describe(self) -> str:
        via = f" at {redact_url(self.endpoint)}" if self.endpoint else ""
        return f"DVC remote {self.name!r} ({redact_url(self.url)}{via})"


def find_remote(root: str | Path = ".", name: str | None = None) -> Remote:
    """The remote `name`, or the project's default one, from DVC's merged config (repo, local, global)."""
    from dvc.config import Config

    dvc_dir = Path(root).resolve() / ".dvc"
    if not dvc_dir.is_dir():
        raise RemoteError(f"{dvc_dir.parent} is not a DVC project (no .dvc folder): run this at the project's root")
    config = Config(dvc_dir=str(dvc_dir), local_dvc_dir=str(dvc_dir))
    remotes = config.get("remote", {})
    name = name or config.get("core", {}).get("remote")
    if not name:
        raise RemoteError("no default DVC remote: set the team's with `make remote REMOTE=<shared folder or "
                          "s3://...>` (or name one: -r NAME)")
    if name not in remotes:
        raise RemoteError(f"no DVC remote named {name!r}; configured: {', '.join(sorted(remotes)) or 'none'}")
    entry = remotes[name]
    return Remote(name, str(entry["url"]), entry.get("endpointurl"))


def where_to_connect(remote: Remote) -> tuple[str, int] | None:
    """(host, port) that must accept a connection for `remote` to work; None for a local folder."""
    target = urlsplit(remote.endpoint or remote.url)
    scheme = target.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and remote.url[1:3] == ":\\"):
        return None
    if not remote.endpoint and scheme == "s3":
        return "s3.amazonaws.com", 443
    host = target.hostname or ""
    return host, target.port or DEFAULT_PORTS.get(scheme, 443)


def check_reachable(remote: Remote, command: str, timeout: float = 5.0) -> None:
    """RemoteError in one line unless `remote` answers (a connection) or, for a folder, is there."""
    address = where_to_connect(remote)
    if address is None:
        folder = Path(urlsplit(remote.url).path if remote.url.startswith("file:") else remote.url)
        there = folder if command == "pull" else folder.parent
        if not there.is_dir():
            raise RemoteError(f"{remote.describe()} is not reachable: folder {there} does not exist (is the "
                              f"share mounted?); nothing was {command}ed")
        return
    host, port = address
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise RemoteError(f"{remote.describe()} is not reachable: {host}:{port} does not answer ({reason}); "
                          f"nothing was {command}ed, the local cache is unchanged: start it, then run "
                          f"make {command} again") from None


def git_carried_outputs(root: str | Path = ".") -> list[str]:
    """The outputs of dvc.yaml that DVC does not cache (`cache: false`: small metrics and plots): git carries
    them, so a clone has them only if they are committed."""
    import yaml

    path = Path(root) / "dvc.yaml"
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.exists() else {}
    return sorted({out for stage in stages.values() for kind in ("outs", "metrics", "plots")
                   for entry in stage.get(kind) or [] if isinstance(entry, dict)
                   for out, spec in entry.items() if (spec or {}).get("cache") is False})


def recorded_sources(root: str | Path = ".") -> list[str]:
    """What dvc.lock recorded the results from and git carries: each stage's dependencies that no stage outputs
    (scripts, code, data files in git) and its params files (params.yaml). A clone whose copy differs finds the
    stage changed, and runs it again."""
    import yaml

    from linclass.plumbing.paths import lock_stages

    try:
        stages = lock_stages(Path(root) / "dvc.lock")
    except (OSError, yaml.YAMLError):
        return []
    deps, outs = set(), set()
    for stage in stages.values():
        deps |= {entry["path"] for entry in stage.get("deps") or [] if isinstance(entry, dict) and "path" in entry}
        deps |= set(stage.get("params") or {})
        outs |= {entry["path"] for entry in stage.get("outs") or [] if isinstance(entry, dict) and "path" in entry}
    return sorted(dep for dep in deps
                  if not any(dep == out or dep.startswith(out.rstrip("/") + "/") for out in outs))


def uncommitted_records(root: str | Path = ".") -> list[str]:
    """dvc.lock, the outputs git carries and what dvc.lock recorded them from (recorded_sources), where they
    differ from the commit (changed, or not in it at all): what a clone of that commit would miss or find
    changed. Empty outside a git repository."""
    paths = ["dvc.lock", *git_carried_outputs(root), *recorded_sources(root)]
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *paths],
                          cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    return sorted({line[3:].strip().strip('"') for line in proc.stdout.splitlines()})


def named(paths: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return paths[0] if len(paths) == 1 else f"{', '.join(paths[:-1])} and {paths[-1]}"


def check_lock_for_pull(root: str | Path) -> None:
    """RemoteError (one line) when the checkout has a pipeline but no dvc.lock: DVC cannot know which outputs to
    pull, and `dvc pull` would fail with a misleading 'Checkout failed'."""
    if (Path(root) / "dvc.yaml").exists() and not (Path(root) / "dvc.lock").exists():
        raise RemoteError("this commit has no dvc.lock (whoever ran the pipeline did not commit it), so DVC cannot "
                          "tell which outputs to pull; nothing was pulled: ask them to commit dvc.lock and the results "
                          "git carries (make push names them) and git push, then git pull and make pull again; or run "
                          "`dvc repro --pull`, which takes from the remote every stage the team already ran and runs "
                          "the rest")


def checkout_failures(output: str) -> list[str]:
    """The targets DVC names after 'Checkout failed for following targets:' (up to 'Is your cache up to date?')."""
    lines = [line.strip() for line in output.splitlines()]
    start = next((i for i, line in enumerate(lines) if "Checkout failed for following targets" in line), len(lines))
    return list(takewhile(lambda line: line and not line.startswith("Is your cache up to date"), lines[start + 1:]))


def transfer(command: str, root: str | Path = ".", name: str | None = None) -> None:
    """`linclass push|pull`: the checks of the module docstring, then `dvc push|pull --run-cache` (a pull then
    `dvc status`), printing their output after each."""
    remote = find_remote(root, name)
    check_reachable(remote, command)
    if command == "pull":
        check_lock_for_pull(root)
    elif uncommitted := uncommitted_records(root):
        print(f"warning: {named(uncommitted)} {'is' if len(uncommitted) == 1 else 'are'} not committed: a clone "
              "pulls only the outputs its commit's dvc.lock names, gets the rest from git, and runs again every stage "
              "whose settings or code differ from what dvc.lock records; commit them (git add "
              f"{' '.join(uncommitted)} && git commit) and git push", file=sys.stderr)
    dvc = dvc_executable()
    for cmd in [[dvc, command, "--run-cache", "-r", remote.name], *([[dvc, "status"]] if command == "pull" else [])]:
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            if failed := checkout_failures(proc.stderr + proc.stdout):
                raise RemoteError(f"`dvc {' '.join(cmd[1:])}` checked out nothing of {', '.join(failed)}: "
                                  f"{remote.describe()} lacks {'it' if len(failed) == 1 else 'them'}, or holds other "
                                  "bytes than their md5 says (changed in the remote: with `verify`, as make remote "
                                  "sets it, DVC checks every file it fetches)")
            raise RemoteError(f"`dvc {' '.join(cmd[1:])}` failed against {remote.describe()}: "
                              f"{error_line(proc.stderr + proc.stdout)}; run make {command} again once it is fixed "
                              "(only what is missing is sent)")
