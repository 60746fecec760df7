"""Bad input gets a clear, typed error and never kills the process."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from engine.backends.llama_cpp import Backend, BackendConfig
from engine.errors import (
    InvalidRequestError,
    KVCacheFullError,
    ModelLoadError,
    ModelNotFoundError,
    NotAGGUFError,
    PromptTooLongError,
    TruncatedGGUFError,
    UnsupportedModelError,
    WrongThreadError,
)
from engine.gguf_info import read_gguf
from engine.sampling import SamplingParams


def write_gguf(path, arch: str, tensors: dict[str, np.ndarray] | None = None, **kv: str) -> str:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    for k, v in kv.items():
        w.add_string(k, v)
    for name, arr in (tensors or {"weight": np.zeros(8, dtype=np.float32)}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        Backend(tmp_path / "nope.gguf")
    with pytest.raises(ModelNotFoundError, match="not a file"):
        Backend(tmp_path)


def test_text_file_named_gguf(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("these are my notes, not a model\n")
    with pytest.raises(NotAGGUFError) as err:
        Backend(p)
    assert "not a GGUF file" in str(err.value) and str(p) in str(err.value)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(NotAGGUFError, match="empty file"):
        read_gguf(empty)


@pytest.mark.parametrize("keep", [0.5, 0.0005])
def test_truncated_gguf(tmp_path, model_path, keep):
    """An interrupted download: half the file (tensors cut) or a few KB (the header cut)."""
    data = open(model_path, "rb").read()
    p = tmp_path / "partial.gguf"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(TruncatedGGUFError, match="incomplete download"):
        Backend(p)


def test_unknown_architecture(tmp_path):
    p = write_gguf(tmp_path / "alien.gguf", "ponderfoo")
    assert read_gguf(p).architecture == "ponderfoo"  # the header itself is fine
    with pytest.raises(UnsupportedModelError) as err:
        Backend(p)
    assert "ponderfoo" in str(err.value)


def test_known_architecture_with_missing_tensors(tmp_path):
    p = write_gguf(tmp_path / "hollow.gguf", "llama")
    with pytest.raises(ModelLoadError) as err:
        Backend(p)
    assert str(p) in str(err.value)


def test_config_checks_what_would_abort_llama_cpp():
    with pytest.raises(InvalidRequestError, match="must not exceed n_batch"):
        BackendConfig(n_seq_max=64, n_batch=32)
    with pytest.raises(InvalidRequestError, match="n_seq_max"):
        BackendConfig(n_seq_max=100_000, n_batch=200_000)
    with pytest.raises(InvalidRequestError, match="flash attention"):
        BackendConfig(type_v="q8_0", flash_attn="off")
    with pytest.raises(InvalidRequestError, match="n_gpu_layers"):
        BackendConfig(n_gpu_layers=-5)


def test_ten_thousand_token_prompt_on_a_2048_context(model_path):
    with Backend(model_path, BackendConfig(n_ctx=2048, n_seq_max=4, n_batch=512)) as b:
        long_prompt = "The quick brown fox jumps over the lazy dog. " * 1000
        toks = b.chat_tokens([{"role": "user", "content": long_prompt}])
        assert len(toks) >= 10_000
        with pytest.raises(PromptTooLongError) as err:
            b.sample_n(toks, 2, SamplingParams(max_tokens=4))
        assert f"{len(toks)} tokens" in str(err.value) and "2048" in str(err.value)
        # Nothing leaked, the backend still works.
        assert b.branches == []
        (ok,) = b.sample_n(b.tokenize("Hello"), 1, SamplingParams(max_tokens=3))
        assert ok.n_generated >= 1


def test_full_kv_cache_is_an_error_and_the_backend_survives(model_path):
    with Backend(model_path, BackendConfig(n_ctx=256, n_seq_max=16, n_batch=256)) as b:
        prompt = b.chat_tokens([{"role": "user", "content": "Tell me a story."}])
        params = SamplingParams(max_tokens=100, ignore_eos=True)
        with pytest.raises(KVCacheFullError) as err:
            b.sample_n(prompt, 12, params)
        assert "KV cache is full" in str(err.value)
        assert b.branches == []
        kids = b.sample_n(prompt, 2, SamplingParams(max_tokens=20, ignore_eos=True))
        assert [k.n_generated for k in kids] == [20, 20]


def test_a_branch_at_the_context_end_finishes_with_length(model_path):
    with Backend(model_path, BackendConfig(n_ctx=256, n_seq_max=2, n_batch=256)) as b:
        prompt = b.tokenize("Once upon a time " * 20)
        (k,) = b.sample_n(prompt, 1, SamplingParams(max_tokens=1000, ignore_eos=True))
        assert k.finish_reason == "length"
        assert len(k.tokens) == 256


def test_backend_refuses_other_threads(model_path):
    with Backend(model_path, BackendConfig(n_ctx=512, n_seq_max=2, n_batch=64)) as b:
        caught: list[BaseException] = []

        def other():
            try:
                b.tokenize("hi")
            except BaseException as e:
                caught.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(caught) == 1 and isinstance(caught[0], WrongThreadError)
        assert b.tokenize("hi")  # the owner still can


def test_bad_model_in_a_subprocess_exits_cleanly(tmp_path):
    """Through the CLI: one clear line, exit status 2, no traceback, no abort."""
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    for path in (bad, tmp_path / "missing.gguf"):
        r = subprocess.run(
            [sys.executable, "-m", "gui.launch", "info", "--model", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("ponder: error: Cannot load model")
        assert "Traceback" not in r.stderr


def test_corrupted_headers_raise_typed_errors_only(tmp_path, model_path):
    """Random damage to the header (first 64 KB) of a real GGUF: read_gguf either succeeds or raises
    a ModelLoadError subclass, never anything else, and never hangs."""
    head = bytearray(open(model_path, "rb").read(65536))
    rng = np.random.default_rng(0)
    p = tmp_path / "damaged.gguf"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(300):
        data = bytearray(head)
        for pos in rng.integers(4, 4096, size=rng.integers(1, 6)):
            data[pos] = rng.integers(0, 256)
        cut = int(rng.integers(8, len(data)))
        p.write_bytes(bytes(data[:cut]))
        try:
            read_gguf(p)
            outcomes["ok"] += 1
        except ModelLoadError:
            outcomes["error"] += 1
    assert outcomes["error"] > 0


def test_a_gguf_with_a_duplicated_token_is_refused_before_llama_cpp_would_abort(tmp_path, model_path):
    """Found by the fuzz suite: llama.cpp asserts (and kills the process) when two tokens read the same
    as C strings; Ponder checks first and says so."""
    import shutil

    from engine.backends.llama_cpp import Backend
    from engine.errors import ModelLoadError

    bad = tmp_path / "dup.gguf"
    shutil.copy(model_path, bad)
    data = bad.read_bytes()
    at = data.index(b"\x02\x00\x00\x00\x00\x00\x00\x00FS")  # the two-byte token "FS"
    with open(bad, "r+b") as f:
        f.seek(at + 8)
        f.write(b"%\x00")  # "%" then a NUL: llama.cpp would read "%", which is token 12213 already
    with pytest.raises(ModelLoadError, match="damaged vocabulary: token .* appears twice"):
        Backend(str(bad))


def test_problem_text_with_lone_surrogates_is_kept_as_valid_text():
    from engine.problems import clean_text

    assert clean_text("2 + 2?") == "2 + 2?"
    assert clean_text("caf\udce9 2+2?") == "caf\ufffd 2+2?"  # a Latin-1 byte from the command line
    assert "\ufffd" in clean_text("\ud800 x") and clean_text("\ud800 x").endswith(" x")
    clean_text("\ud83d").encode("utf-8")  # never raises
