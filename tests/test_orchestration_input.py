"""Input of the commands around the pipeline, checked before anything starts: a Ray address, a node address or
a setting of the team stack that is not one is one line naming it; and what `linclass --help` lists as allowed
is what the code allows (settings.py, cluster.py, services.py declare it; the help repeats it so that
`linclass` starts without importing them)."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import typer
from conftest import BIN

from linclass.cli import app
from linclass.orchestration import cluster, services
from linclass.orchestration.ray_backend import RaySweepError, check_ray
from linclass.settings import FEATURE_KINDS, LOSS_NAMES, REGULARIZER_NAMES


@pytest.mark.parametrize("address", ["127.0.0.2", "127.0.0.2:", "127.0.0.2:head", ":6390", "127.0.0.2:0",
                                     "127.0.0.2:70000"])
def test_a_ray_address_that_is_not_host_and_port_is_named_before_any_connection(address):
    # "127.0.0.2" passed the check silently and reached ray.init (Ray's own multi-line error); a port past 65535
    # was taken modulo 65536 by the socket module, so another port was probed
    with pytest.raises(RaySweepError, match=rf"^Ray address {address!r} \(--address, or RAY_ADDRESS\) is not the "
                                            r"head's HOST:PORT with a port of 1-65535, e\.g\. 127\.0\.0\.2:6390 "):
        check_ray(address)


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.0.0.1", "127.0.0.999", "127.foo", "localhost", " 127.0.0.3"])
def test_a_node_address_that_is_not_loopback_beyond_127_0_0_1_is_refused_before_any_node_starts(ip):
    # "127.0.0.999" and "127.foo" passed (they start with "127."): `ray start` then failed in a log file
    port = 1   # no cluster of this user's runs there; its state folder must not appear
    with pytest.raises(cluster.ClusterError, match=rf"^node address {ip!r} is not allowed: give loopback addresses "
                                                   r"127\.0\.0\.2 and up"):
        cluster.start_checked("127.0.0.2", (ip,), port, 1)
    assert not cluster.state_dir(port).exists()


def options(*path: str) -> dict:
    command = typer.main.get_command(app)
    for name in path:
        command = getattr(command, "commands", {})[name]
    return {param.name: param for param in command.params}


def listed(names) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}"


def test_the_help_lists_exactly_what_the_settings_and_modules_allow():
    sweep = options("sweep")
    assert sweep["loss"].help == listed(LOSS_NAMES)
    assert sweep["regularizer"].help == listed(REGULARIZER_NAMES)
    assert sweep["features"].help.endswith(f"({', '.join(FEATURE_KINDS)})")
    assert f"({', '.join(services.PERMISSIONS)})" in options("services", "add-user")["grant"].help
    assert options("services", "env")["user"].default == services.ADMIN
    up = options("cluster", "up")
    assert (up["head"].default, tuple(up["workers"].default.split(",")), up["port"].default) == \
        (cluster.DEFAULT_HEAD, cluster.DEFAULT_WORKERS, cluster.DEFAULT_PORT)
    for command in ("down", "status"):
        assert options("cluster", command)["port"].default == cluster.DEFAULT_PORT


@pytest.mark.parametrize(("variable", "value", "allowed"), [
    ("LINCLASS_MLFLOW_PORT", "abc", "a whole number, 1..65535"),
    ("LINCLASS_PG_PORT", "99999", "a whole number, 1..65535"),
    ("LINCLASS_AUTH_CACHE_SECONDS", "-1", "a whole number, 0..3600"),
    ("LINCLASS_DEFAULT_PERMISSION", "EDIT", "NO_PERMISSIONS, READ"),
])
def test_a_bad_setting_of_the_stack_is_one_line_before_anything_is_made(tmp_path, variable, value, allowed):
    # LINCLASS_MLFLOW_PORT=abc said "invalid literal for int() with base 10: 'abc'" after writing secrets.env;
    # LINCLASS_PG_PORT=99999 made a whole database cluster, then pg_ctl failed ("Examine the log output");
    # LINCLASS_AUTH_CACHE_SECONDS and LINCLASS_DEFAULT_PERMISSION were refused after PostgreSQL had started
    folder = tmp_path / "services"
    env = {**os.environ, "LINCLASS_SERVICES_DIR": str(folder), variable: value}
    proc = subprocess.run([str(BIN / "linclass"), "services", "up"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc
    assert proc.stderr == f"error: {variable}={value!r}; allowed: {allowed}\n"
    assert not folder.exists()


def test_a_sweep_on_the_pixels_and_one_on_features_of_the_same_combination_have_disjoint_prefixes():
    # the pixels' prefix was sweep-softmax-l2-, which the features points (sweep-softmax-l2-hog_hist-...) begin
    # with too: `make sweep LOSS=softmax REG=l2` removed the features sweep's experiments (clear_earlier) as
    # "earlier experiments" of its own
    from linclass.orchestration.sweep import sweep_points, sweep_prefix

    kinds = ["pixels", *FEATURE_KINDS]
    names = {kind: [p.name for p in sweep_points("softmax", "l2", "0.01,0.05", "1e-4", kind)] for kind in kinds}
    for kind in kinds:
        for other in kinds:
            mine = [name.startswith(sweep_prefix("softmax", "l2", kind)) for name in names[other]]
            assert all(mine) if other == kind else not any(mine), (kind, other, names[other])


def test_a_server_on_every_network_tells_its_clients_the_machines_name_not_0_0_0_0(tmp_path):
    # `make server HOST=0.0.0.0` printed `export MLFLOW_TRACKING_URI=http://0.0.0.0:PORT`, an address no other
    # machine (a teammate's, a Ray node) reaches; the team stack's users/NAME.env names the host (tracking_url)
    import signal
    import socket

    from conftest import free_port

    port = free_port()
    proc = subprocess.Popen([str(BIN / "linclass"), "server", "--host", "0.0.0.0", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
    finally:   # SIGTERM: the supervisor passes it on to MLflow (in a session of its own) and waits for it
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert lines[0].startswith(f"MLflow server on http://0.0.0.0:{port}, answering requests with its token"), lines
    token = tmp_path / "mlflow-server" / "token"
    assert lines[1] == (f"export MLFLOW_TRACKING_URI=http://{socket.gethostname()}:{port} "
                        f"MLFLOW_TRACKING_TOKEN=$(cat {token})\n")


def test_a_failing_dvc_command_is_named_with_dvcs_own_error_not_its_support_link(tmp_path, monkeypatch):
    # after an unexpected error DVC prints a support link last, and `linclass sweep` said "dvc exp run --queue
    # failed: Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!"
    from linclass.orchestration.sweep import SweepError, dvc

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)   # no commit yet: DVC's unexpected error
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hello\n")
    dvc("init", "-q")
    with pytest.raises(SweepError, match=r"^dvc exp run --queue failed: unexpected error - Empty git repo$"):
        dvc("exp", "run", "--queue", "hello")


@pytest.mark.parametrize("secrets_file", ["missing", "without the admin password"])
def test_a_stack_whose_secrets_are_gone_is_named_and_no_new_ones_are_written(tmp_path, secrets_file):
    # `services status` wrote a new secrets.env when it was gone: passwords that match none of the stack's
    # databases, so that the next `services up` could not reach them
    folder = tmp_path / "services"
    folder.mkdir(mode=0o700)
    (folder / "state.json").write_text(json.dumps({"host": "127.0.0.1", "port": 1, "pg_port": 2,
                                                   "local_postgres": True, "mlflow_pid": None}))
    secrets = folder / "secrets.env"
    if secrets_file != "missing":
        secrets.write_text("LINCLASS_PG_PASSWORD=kept\n")
    before = secrets.read_bytes() if secrets.exists() else None
    env = {**os.environ, "LINCLASS_SERVICES_DIR": str(folder)}
    proc = subprocess.run([str(BIN / "linclass"), "services", "status"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc
    why = "is missing" if secrets_file == "missing" else \
        "lacks MLFLOW_FLASK_SERVER_SECRET_KEY, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_CRYPTO_KEK_PASSPHRASE"
    assert proc.stderr.startswith(f"error: {secrets} {why}: "), proc.stderr
    assert proc.stderr.endswith("restore it from a backup (new ones would not match its databases)\n"), proc.stderr
    assert (secrets.read_bytes() if secrets.exists() else None) == before
