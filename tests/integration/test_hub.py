"""Getting a model from the Hub as a user does, against the tests' fixture server (the Hub's file API
for fixture repositories, reached through HF_ENDPOINT): ``ponder models --get`` downloads into the
Hub's cache with a progress line, resumes after a SIGKILL, checks the sha256, and every failure
(no repository, no file, not a GGUF, a gated repository without a token, a bad checksum, no
network, a full disk) is one clear line with nothing half-written listed as a model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hub_fixture import FixtureRepo, HubFixture, smol_repo, tiny_gguf
from processes import run_on_pty

from engine import children, hub
from engine.gguf_info import human_size

SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture
def tiny(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return tiny_gguf(tmp_path / "src" / "tiny-Q8_0.gguf")


@pytest.fixture
def fixture(model_path, tiny, tmp_path):
    repos = {
        "fixture/smol": smol_repo(model_path),
        "fixture/prm": FixtureRepo(files={"math-shepherd-tiny.Q8_0.gguf": tiny.read_bytes()}),
        "fixture/gated": FixtureRepo(
            files={"tiny-Q8_0.gguf": tiny.read_bytes()}, gated=True, token="hf_secret"
        ),
        "fixture/badsum": FixtureRepo(
            files={"tiny-Q8_0.gguf": tiny.read_bytes()}, wrong_sha={"tiny-Q8_0.gguf"}
        ),
        "fixture/notgguf": FixtureRepo(files={"weights.gguf": b"<html>not a model</html>" * 100}),
    }
    with HubFixture(repos) as f:
        yield f


@pytest.fixture
def env(isolated_dirs, fixture, monkeypatch):
    """The CLI's environment: the fixture as the Hub, a cache of the test's own, no token."""
    monkeypatch.setenv("HF_ENDPOINT", fixture.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(isolated_dirs / "hfhome"))  # no saved token of the machine's
    e = dict(os.environ)
    return e


def ponder(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def _cache() -> Path:
    return Path(os.environ["HF_HUB_CACHE"])


def _listed(env) -> list[dict]:
    r = ponder("models", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["models"]


def test_get_downloads_into_the_hub_cache_with_progress_and_ponder_models_lists_it(env, fixture, model_path):
    r = ponder("models", "--get", "fixture/smol", "--file", SMOL, env=env)
    assert r.returncode == 0, r.stderr
    assert "Downloading fixture/smol/" + SMOL in r.stderr
    # the progress lines off a terminal: bytes of the total and the rate
    size = human_size(Path(model_path).stat().st_size)
    assert f"downloading, 1.0 MB of {size}" in r.stderr, r.stderr
    assert f"done, {size} of {size} (100%)" in r.stderr and "MB/s" in r.stderr and "checking" in r.stderr
    path = Path(r.stdout.splitlines()[0])
    assert path.name == SMOL and path.is_symlink()
    # laid out as huggingface_hub lays it out: its own lookup finds the file
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache("fixture/smol", SMOL, cache_dir=str(_cache()))
    assert found is not None and Path(found) == path
    assert Path(found).read_bytes()[:4] == b"GGUF"
    assert Path(found).stat().st_size == Path(model_path).stat().st_size
    listed = [m for m in _listed(env) if m["source"] == "huggingface"]
    assert [Path(m["path"]).name for m in listed] == [SMOL]
    assert listed[0]["ok"] and listed[0]["catalog_id"] == "smollm2-135m-instruct"
    # asked again: already there, nothing fetched
    before = len(fixture.ranges(SMOL))
    r = ponder("models", "--get", "fixture/smol", "--quant", "Q4_1", env=env)
    assert r.returncode == 0 and Path(r.stdout.splitlines()[0]) == path
    assert len(fixture.ranges(SMOL)) == before


def test_a_download_killed_halfway_resumes_where_it_stopped(env, fixture, model_path):
    fixture.rate = 12 << 20  # 12 MB/s: the 94 MB file takes about 8 s
    proc = children.start(
        [sys.executable, "-m", "engine.cli", "models", "--get", "fixture/smol", "--file", SMOL],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    blobs = None
    deadline = time.monotonic() + 60
    partial = None
    while time.monotonic() < deadline:
        found = list(_cache().glob("models--fixture--smol/blobs/*.incomplete"))
        if found and found[0].stat().st_size > 30 << 20:
            partial = found[0]
            break
        time.sleep(0.1)
    assert partial is not None, "the download never got 30 MB in"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    kept = partial.stat().st_size
    assert 30 << 20 <= kept < Path(model_path).stat().st_size
    blobs = partial.parent
    # nothing half-written is listed as a model
    assert not [m for m in _listed(env) if m["source"] == "huggingface"]
    fixture.rate = None
    r = ponder("models", "--get", "fixture/smol", "--file", SMOL, env=env)
    assert r.returncode == 0, r.stderr
    assert "resuming at" in r.stderr
    ranges = fixture.ranges(SMOL)
    assert ranges[-1] is not None and int(ranges[-1].removeprefix("bytes=").split("-")[0]) >= kept
    whole = [p for p in blobs.iterdir() if not p.name.endswith(".incomplete")]
    assert len(whole) == 1 and whole[0].read_bytes() == Path(model_path).read_bytes()
    assert not list(blobs.glob("*.incomplete"))
    assert [Path(m["path"]).name for m in _listed(env) if m["source"] == "huggingface"] == [SMOL]


def test_a_cancelled_download_keeps_its_bytes_and_the_next_one_continues(env, fixture, model_path):
    fixture.rate = 20 << 20
    model = hub.pick(hub.list_repo("fixture/smol"), file=SMOL)
    cancel = threading.Event()
    seen = []

    def progress(p):
        seen.append((p.done, p.rate))
        if p.done > 20 << 20:
            cancel.set()

    with pytest.raises(hub.DownloadCancelled, match="resumes from there next time"):
        hub.download(model, progress, cancel)
    kept = hub.partial_bytes(model)
    assert kept > 20 << 20 and hub.cached(model) is None
    assert any(rate > 0 for _, rate in seen)
    fixture.rate = None
    resumed = []
    path = hub.download(model, lambda p: resumed.append(p.resumed_from))
    assert resumed and resumed[-1] == kept
    assert path.read_bytes() == Path(model_path).read_bytes()


def test_a_gated_repository_needs_a_token_and_ponder_never_stores_it(env, isolated_dirs):
    r = ponder("models", "--get", "fixture/gated", env=env)
    assert r.returncode == 2
    assert "fixture/gated is gated" in r.stderr and "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr
    assert not list(_cache().glob("**/*.gguf"))
    r = ponder("models", "--get", "fixture/gated", env={**env, "HF_TOKEN": "hf_wrong"})
    assert r.returncode == 2 and "gated" in r.stderr
    r = ponder("models", "--get", "fixture/gated", env={**env, "HF_TOKEN": "hf_secret"})
    assert r.returncode == 0, r.stderr
    for f in isolated_dirs.rglob("*"):
        if f.is_file() and f.stat().st_size < 1 << 20:
            assert b"hf_secret" not in f.read_bytes(), f"the token was written to {f}"


def test_a_checksum_that_does_not_match_deletes_the_file(env):
    r = ponder("models", "--get", "fixture/badsum", env=env)
    assert r.returncode == 2
    assert "failed its checksum" in r.stderr and "deleted" in r.stderr
    assert not list(_cache().glob("**/blobs/*")), "neither the file nor a partial is kept"
    assert not [m for m in _listed(env) if m["source"] == "huggingface"]


@pytest.mark.parametrize(
    "args, line",
    [
        (["--get", "fixture/nothere"], "No repository fixture/nothere on http://127.0.0.1"),
        (
            ["--get", "fixture/smol", "--file", "missing.gguf"],
            "fixture/smol has no file missing.gguf. GGUFs there: " + SMOL,
        ),
        (
            ["--get", "fixture/smol", "--file", "README.md"],
            "README.md is not a GGUF file (it is in fixture/smol)",
        ),
        (["--get", "fixture/smol", "--quant", "Q8_0"], "fixture/smol has no Q8_0 GGUF; it has: Q4_1"),
        (["--get", "fixture/notgguf"], "fixture/notgguf/weights.gguf is not a usable GGUF"),
        (["--get", "not a repo"], "is not a Hub repository id"),
        (["--file", "x.gguf"], "--file, --quant and --revision go with --get REPO"),
    ],
)
def test_each_failure_is_one_clear_line_and_nothing_is_listed(env, args, line):
    r = ponder("models", *args, env=env)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert line in r.stderr, r.stderr
    errors = [x for x in r.stderr.splitlines() if x.startswith("ponder: error:")]
    assert "Traceback" not in r.stderr and len(errors) == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == errors[0], "the error is the last word"
    assert "downloading, " not in r.stderr or "notgguf" not in line, (
        "a file that is no GGUF is not fetched whole"
    )
    assert not list(_cache().glob("**/snapshots/**/*.gguf"))


def test_no_network_and_offline_mode_say_so(env):
    dead = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on the discard port
    r = ponder("models", "--get", "fixture/smol", env=dead)
    assert r.returncode == 2 and "Cannot reach the Hugging Face Hub at http://127.0.0.1:9" in r.stderr
    r = ponder("models", "--get", "fixture/smol", env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "HF_HUB_OFFLINE is set" in r.stderr
    r = ponder("models", "--catalog", env=dead)
    assert r.returncode == 0, r.stderr
    assert "math-shepherd-mistral-7b-prm" in r.stdout and "Cannot reach" in r.stdout


def _in_small_disk(env, mnt: Path, size_mb: int, body: str) -> str:
    """Run ``body`` (sh) with a ``size_mb`` tmpfs at ``mnt`` as the Hub cache, in a mount namespace
    of the test's own: a real disk that fills."""
    script = f"mount -t tmpfs -o size={size_mb}m tmpfs {mnt} || exit 9\nexport HF_HUB_CACHE={mnt}\n{body}"
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-m", "--map-root-user"]
    r = subprocess.run([*unshare, "sh", "-c", script], capture_output=True, text=True, env=env, timeout=180)
    return r.stdout + r.stderr


def test_a_disk_too_small_is_refused_before_a_byte(env, fixture, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    get = f"{sys.executable} -m engine.cli models --get fixture/smol --file {SMOL}"
    out = _in_small_disk(env, mnt, 40, f"{get}; echo rc=$?")
    assert "rc=2" in out and "needs 93.8 MB more on disk but" in out and "40.0 MB free" in out, out
    assert "Traceback" not in out
    assert not fixture.ranges(SMOL), "nothing was fetched"


def test_a_disk_that_fills_midway_keeps_the_bytes_and_the_download_resumes_once_there_is_room(
    env, fixture, tmp_path, model_path
):
    fixture.rate = 16 << 20
    mnt = tmp_path / "small"
    mnt.mkdir()
    get = f"{sys.executable} -m engine.cli models --get fixture/smol --file {SMOL}"
    blobs = f"{mnt}/models--fixture--smol/blobs"
    out = _in_small_disk(
        env,
        mnt,
        120,
        # 120 MB passes the check for 94; another program then takes 70 MB while it downloads
        f"(sleep 1.5; dd if=/dev/zero of={mnt}/filler bs=1M count=70 2>/dev/null) & "
        f"{get}; echo rc=$?; wait; du -b {blobs}/*.incomplete; rm {mnt}/filler; {get}; echo rc=$?; "
        f"ls {blobs}",
    )
    assert "rc=2" in out and "The disk filled while downloading " + SMOL in out, out
    assert "free some space and run it again to resume" in out and "Traceback" not in out
    kept = int(next(line for line in out.splitlines() if line.endswith(".incomplete")).split()[0])
    assert 0 < kept < Path(model_path).stat().st_size
    assert "resuming at" in out and out.count("rc=0") == 1, out
    # the blobs folder holds the whole file under its sha256, no partial left
    listing = out.split("rc=0", 1)[1]
    assert re.search(r"^[0-9a-f]{64}$", listing, re.M) and ".incomplete" not in listing, out


def test_the_catalog_lists_size_fit_and_role_from_the_hubs_listing(env, fixture, model_path):
    """A catalog repository the fixture serves: its size from the listing, its fit; the others say
    why they could not be listed, each once per row, and the command still succeeds."""
    fixture.repos["bartowski/SmolLM2-360M-Instruct-GGUF"] = FixtureRepo(
        files={"SmolLM2-360M-Instruct-Q4_K_M.gguf": Path(model_path)}
    )
    r = ponder("models", "--catalog", "--json", env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = {row["id"]: row for row in out["catalog"]}
    smol = rows["smollm2-360m-instruct"]
    assert smol["size"] == Path(model_path).stat().st_size and smol["fit"] == "fits"
    assert smol["role"] == "policy" and not smol["downloaded"] and "error" not in smol
    assert rows["math-shepherd-mistral-7b-prm"]["role"] == "PRM" and rows["qwen3-1.7b"]["role"] == "thinking"
    assert "No repository" in rows["qwen2.5-1.5b-instruct"]["error"]
    assert out["ram_available"] > 0
    ponder("models", "--get", "bartowski/SmolLM2-360M-Instruct-GGUF", env=env)  # its default quant
    r = ponder("models", "--catalog", "--json", env=env)
    rows = {row["id"]: row for row in json.loads(r.stdout)["catalog"]}
    assert rows["smollm2-360m-instruct"]["downloaded"]


def test_a_models_header_is_read_from_the_hub_before_its_download(env, fixture, model_path):
    from engine.gguf_info import read_gguf

    model = hub.pick(hub.list_repo("fixture/smol"), file=SMOL)
    info = hub.remote_header(model)
    local = read_gguf(model_path)
    assert (info.n_params, info.n_layer, info.metadata) == (local.n_params, local.n_layer, local.metadata)
    got = [r for r in fixture.ranges(SMOL)]
    assert got == ["bytes=0-4194303"], "one 4 MB range, not the file"
    assert hub.cached(model) is None  # nothing was downloaded


def test_two_downloads_of_one_file_at_once_the_second_says_so(env, fixture):
    from filelock import FileLock

    model = hub.pick(hub.list_repo("fixture/smol"), file=SMOL)
    storage = _cache() / "models--fixture--smol"
    lock_dir = _cache() / ".locks" / storage.name
    lock_dir.mkdir(parents=True)
    with FileLock(str(lock_dir / f"{model.parts[0].sha256}.lock")):  # another program holds it
        r = ponder("models", "--get", "fixture/smol", env=env)
    assert r.returncode == 2 and "is being downloaded by another program right now" in r.stderr, r.stderr


def test_on_a_terminal_the_download_is_a_progress_bar_with_bytes_and_rate(env, fixture, model_path):
    """stderr a pseudo-terminal: rich's bar (bytes of the total, the rate) redrawn while it downloads;
    stdout, a pipe, holds the path alone."""
    fixture.rate = 24 << 20  # about 4 s
    cmd = [sys.executable, "-m", "engine.cli", "models", "--get", "fixture/smol", "--file", SMOL]
    returncode, out, chunks = run_on_pty(cmd, timeout=120, env=env)
    assert returncode == 0
    assert Path(out.decode().splitlines()[0]).name == SMOL
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(c for _, c in chunks))
    total = f"{Path(model_path).stat().st_size / 1e6:.1f}"  # rich counts in decimal MB
    frames = re.findall(r"([\d.]+)/" + re.escape(total) + r" MB", text)
    assert len(set(frames)) >= 3, text[-2000:]  # the bar moved
    assert re.search(r"\d+(\.\d+)? MB/s", text), text[-2000:]
