import hashlib
import time

import numpy as np
import pytest
from helpers_http import FaultyHTTPServer, closed_port

from linclass.data.download import DownloadError, download, fetch, resolve_source
from linclass.files import md5_file as md5sum
from linclass.settings import Data

BODY = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
BODY_MD5 = hashlib.md5(BODY).hexdigest()
WRONG_MD5 = "0" * 32
FAST = dict(backoff=0.01, timeout=5.0, progress=False)


@pytest.fixture
def server():
    with FaultyHTTPServer() as s:
        yield s


@pytest.fixture
def dest_dir(tmp_path):
    d = tmp_path / "downloads"
    d.mkdir()
    return d


def test_md5sum_matches_hashlib(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(BODY)
    assert md5sum(p) == BODY_MD5


def test_http_success_verifies_md5(server, dest_dir):
    url = server.serve("/data.bin", BODY)
    out = download(url, dest_dir / "data.bin", BODY_MD5, **FAST)
    assert out == dest_dir / "data.bin"
    assert out.read_bytes() == BODY
    assert sorted(p.name for p in dest_dir.iterdir()) == ["data.bin"]
    assert server.hits["/data.bin"] == 1


def test_file_url_success_same_function(tmp_path, dest_dir):
    src = tmp_path / "source.bin"
    src.write_bytes(BODY)
    out = download(src.as_uri(), dest_dir / "copy.bin", BODY_MD5.upper(), **FAST)
    assert out.read_bytes() == BODY
    assert sorted(p.name for p in dest_dir.iterdir()) == ["copy.bin"]


def test_missing_local_file_is_not_retried(tmp_path, dest_dir):
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="file not found"):
        download((tmp_path / "nope.bin").as_uri(), dest_dir / "x.bin", BODY_MD5, retries=3, backoff=1.0, progress=False)
    assert time.monotonic() - t0 < 0.9  # no backoff sleep happened
    assert list(dest_dir.iterdir()) == []


def test_md5_mismatch_leaves_nothing(server, dest_dir):
    url = server.serve("/data.bin", BODY)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir / "data.bin", WRONG_MD5, **FAST)
    msg = str(info.value)
    assert msg == f"md5 mismatch for {url}: expected {WRONG_MD5}, got {BODY_MD5}"
    assert list(dest_dir.iterdir()) == []
    assert server.hits["/data.bin"] == 1  # md5 mismatch is not retried


def test_bad_download_does_not_clobber_existing_dest(server, dest_dir):
    dest = dest_dir / "data.bin"
    dest.write_bytes(b"old content")
    url = server.serve("/data.bin", BODY)
    with pytest.raises(DownloadError, match="md5 mismatch"):
        download(url, dest, WRONG_MD5, **FAST)
    assert dest.read_bytes() == b"old content"
    assert sorted(p.name for p in dest_dir.iterdir()) == ["data.bin"]


def test_existing_dest_with_wrong_md5_is_replaced(server, dest_dir):
    dest = dest_dir / "data.bin"
    dest.write_bytes(b"stale")
    url = server.serve("/data.bin", BODY)
    download(url, dest, BODY_MD5, **FAST)
    assert dest.read_bytes() == BODY


def test_truncated_body_is_retried_then_succeeds(server, dest_dir):
    url = server.serve("/data.bin", BODY, truncate_times=2)
    download(url, dest_dir / "data.bin", BODY_MD5, retries=3, **FAST)
    assert (dest_dir / "data.bin").read_bytes() == BODY
    assert server.hits["/data.bin"] == 3


def test_always_truncated_fails_after_retries(server, dest_dir):
    url = server.serve("/data.bin", BODY, truncate_times=10**9)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir / "data.bin", BODY_MD5, retries=3, **FAST)
    msg = str(info.value)
    assert msg.startswith(f"could not download {url} after 3 attempts: truncated body")
    assert "\n" not in msg
    assert server.hits["/data.bin"] == 3
    assert list(dest_dir.iterdir()) == []


@pytest.mark.parametrize("fail_times", [1, 2])
def test_server_error_then_ok_succeeds(server, dest_dir, fail_times):
    url = server.serve("/data.bin", BODY, fail_times=fail_times)
    download(url, dest_dir / "data.bin", BODY_MD5, retries=3, **FAST)
    assert (dest_dir / "data.bin").read_bytes() == BODY
    assert server.hits["/data.bin"] == fail_times + 1


def test_server_error_always_fails_after_retries(server, dest_dir):
    url = server.serve("/data.bin", BODY, fail_times=10**9, fail_status=503)
    with pytest.raises(DownloadError, match=r"after 4 attempts: HTTP 503"):
        download(url, dest_dir / "data.bin", BODY_MD5, retries=4, **FAST)
    assert server.hits["/data.bin"] == 4
    assert list(dest_dir.iterdir()) == []


@pytest.mark.parametrize("status", [404, 403])
def test_client_error_is_not_retried(server, dest_dir, status):
    url = server.serve("/data.bin", BODY, status=status)
    with pytest.raises(DownloadError) as info:
        download(url, dest_dir / "data.bin", BODY_MD5, retries=3, **FAST)
    assert str(info.value).startswith(f"HTTP {status} ")
    assert url in str(info.value)
    assert server.hits["/data.bin"] == 1
    assert list(dest_dir.iterdir()) == []


def test_unreachable_host_fails_after_retries(dest_dir):
    url = f"http://127.0.0.1:{closed_port()}/data.bin"
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match=r"could not download .* after 3 attempts: .*refused"):
        download(url, dest_dir / "data.bin", BODY_MD5, retries=3, **FAST)
    assert time.monotonic() - t0 < 5.0
    assert list(dest_dir.iterdir()) == []


def test_existing_dest_with_right_md5_makes_no_request(server, dest_dir):
    dest = dest_dir / "data.bin"
    dest.write_bytes(BODY)
    url = server.serve("/data.bin", BODY)
    assert download(url, dest, BODY_MD5, **FAST) == dest
    assert server.hits.get("/data.bin", 0) == 0


def test_creates_missing_parent_directory(server, tmp_path):
    url = server.serve("/data.bin", BODY)
    dest = tmp_path / "a" / "b" / "data.bin"
    download(url, dest, BODY_MD5, **FAST)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("bad_md5", ["", "abc", "g" * 32, "0" * 31, "0" * 33, None])
def test_bad_md5_string_is_value_error(bad_md5, dest_dir):
    with pytest.raises(ValueError, match=r"md5=.* (is out of range: allowed 32 hex digits|is not text)"):
        download("http://127.0.0.1:1/x", dest_dir / "x", bad_md5, **FAST)


@pytest.mark.parametrize("url", ["ftp://example.com/x.tar.gz", "/tmp/x.tar.gz", "x.tar.gz", "s3://bucket/x"])
def test_unsupported_scheme_is_value_error(url, dest_dir):
    with pytest.raises(ValueError, match=r"is not supported; allowed: http://, https://, file:// URLs"):
        download(url, dest_dir / "x", BODY_MD5, **FAST)
    assert list(dest_dir.iterdir()) == []


@pytest.mark.parametrize("kwargs", [dict(retries=0), dict(retries=1.5), dict(timeout=0), dict(backoff=-1)])
def test_bad_retry_settings_are_value_errors(kwargs, dest_dir):
    with pytest.raises(ValueError):
        download("http://127.0.0.1:1/x", dest_dir / "x", BODY_MD5, **{**FAST, **kwargs})


def test_progress_is_short_and_on_stderr(tmp_path, dest_dir, capsys, monkeypatch):
    import linclass.data.download as dl

    monkeypatch.setattr(dl, "CHUNK_SIZE", 1000)  # 300 chunks: progress must still stay short
    src = tmp_path / "source.bin"
    src.write_bytes(BODY)
    download(src.as_uri(), dest_dir / "copy.bin", BODY_MD5, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert 2 <= len(lines) <= 22
    assert "100%" in lines[-1]


def test_progress_false_prints_nothing(tmp_path, dest_dir, capsys):
    src = tmp_path / "source.bin"
    src.write_bytes(BODY)
    download(src.as_uri(), dest_dir / "copy.bin", BODY_MD5, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---- where this machine reads the archive from (per-machine, never a parameter) ----

OFFICIAL = Data(name="cifar10", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                md5="c58f30108f718f92721af3b95e74349a", retries=1, timeout=5)


def test_source_is_params_without_a_machine_setting(tmp_path):
    source = resolve_source(OFFICIAL, tmp_path, environ={})
    assert (source.url, source.md5, source.origin) == (OFFICIAL.url, OFFICIAL.md5, "params.yaml")


def test_env_wins_over_local_env_file_which_wins_over_params(tmp_path):
    (tmp_path / "local.env").write_text("# this machine\nexport LINCLASS_DATA_URL='file:///a/copy.tar.gz'\n"
                                        "LINCLASS_DATA_MD5=" + "a" * 32 + "\n")
    from_file = resolve_source(OFFICIAL, tmp_path, environ={})
    assert (from_file.url, from_file.md5, from_file.origin) == ("file:///a/copy.tar.gz", "a" * 32, "local.env")
    from_env = resolve_source(OFFICIAL, tmp_path, environ={"LINCLASS_DATA_URL": "http://127.0.0.1:1/x.tar.gz"})
    # a mirror without its own md5 must be byte-identical to the official archive
    assert (from_env.url, from_env.md5, from_env.origin) == ("http://127.0.0.1:1/x.tar.gz", OFFICIAL.md5,
                                                             "$LINCLASS_DATA_URL")


def test_bad_machine_setting_is_one_line_naming_where_it_came_from(tmp_path):
    (tmp_path / "local.env").write_text("LINCLASS_DATA_URL=ftp://x/y.tar.gz\n")
    with pytest.raises(ValueError, match=r"ftp://x/y.tar.gz.*\(from local.env\)"):
        resolve_source(OFFICIAL, tmp_path, environ={})
    (tmp_path / "local.env").write_text("LINCLASS_DATA_URL\n")
    with pytest.raises(ValueError, match="has no LINCLASS_DATA_URL="):
        resolve_source(OFFICIAL, tmp_path, environ={})


def test_fetch_reads_the_local_copy_and_an_unreachable_official_url_says_how_to_use_one(tmp_path, monkeypatch):
    copy = tmp_path / "copy.tar.gz"
    copy.write_bytes(b"same images, other tar metadata")
    md5 = hashlib.md5(copy.read_bytes()).hexdigest()
    monkeypatch.setenv("LINCLASS_DATA_URL", copy.as_uri())
    monkeypatch.setenv("LINCLASS_DATA_MD5", md5)
    source = fetch(OFFICIAL, tmp_path / "raw" / "a.tar.gz", tmp_path, progress=False)
    assert source.md5 == md5 and (tmp_path / "raw" / "a.tar.gz").read_bytes() == copy.read_bytes()

    monkeypatch.delenv("LINCLASS_DATA_MD5")   # a repack without its own md5: the error says how to give it one
    with pytest.raises(DownloadError, match=r"md5 mismatch .*\$LINCLASS_DATA_URL gives no LINCLASS_DATA_MD5.* set "
                                            r"LINCLASS_DATA_MD5=<its md5> beside LINCLASS_DATA_URL$"):
        fetch(OFFICIAL, tmp_path / "raw" / "c.tar.gz", tmp_path, progress=False)
    assert not (tmp_path / "raw" / "c.tar.gz").exists()

    monkeypatch.delenv("LINCLASS_DATA_URL")
    offline = OFFICIAL.model_copy(update={"url": "http://127.0.0.1:9/cifar-10-python.tar.gz"})   # nothing listens there
    with pytest.raises(DownloadError, match=r"could not download .* LINCLASS_DATA_URL=file:///.*local\.env"):
        fetch(offline, tmp_path / "raw" / "b.tar.gz", tmp_path, progress=False)
    assert not (tmp_path / "raw" / "b.tar.gz").exists()
