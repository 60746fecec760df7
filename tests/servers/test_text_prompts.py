"""An OpenAI-compatible server that takes text prompts only (issue 42): a real ASGI app
(tests/helpers/text_only_server.py: FastAPI validating ``prompt`` as a string, uvicorn, the embedded
model through llama-cpp-python) refuses the probe's token ids, and Ponder learns from the refusal
that it takes text. Every registered strategy runs to the end over it, through the CLI, with the
same tree shapes, budgets and tokens as over the same app taking token ids on the same seed (the app
answers from a cleared cache with the request's seed: its answer depends only on the prompt's tokens),
and with the tokens the server itself counted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from engine import children
from engine.backends.server.launch import free_port
from engine.events import NodeAdded
from engine.search import registry
from engine.store import Store

APP = Path(__file__).resolve().parents[1] / "helpers" / "text_only_server.py"
PROBLEM = "Tom has 3 apples and buys 5 more. How many apples does he have?"


@contextmanager
def text_only_app(model_path: str, *flags: str) -> Iterator[str]:
    """The app on a loopback port (a child that ends with this process); its URL once it answers."""
    port = free_port()
    proc = children.start(
        [sys.executable, str(APP), model_path, "--port", str(port), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2).read()  # noqa: S310 - loopback
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                    raise AssertionError(f"the app did not start: {log}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url + "/stats", timeout=10).read())  # noqa: S310 - loopback


def ponder(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gui.launch", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def no_python_warning(err: str) -> None:
    assert "Warning:" not in err and "Traceback" not in err and ".py:" not in err, err[-2000:]


def shapes(db: Path) -> dict[str, tuple[list[tuple], int]]:
    """Each strategy's tree (node, parent, role) and the tokens its nodes generated, as recorded."""
    out = {}
    with Store.open(db, readonly=True) as store:
        s = store.session(store.list_sessions()[0].id)
        for run in s.runs:
            nodes = [e for e in store.events(run.id) if isinstance(e, NodeAdded)]
            out[run.strategy] = (
                [(n.node_id, n.parent_id, n.role) for n in nodes],
                sum(n.n_tokens for n in nodes),
            )
    return out


def test_every_strategy_runs_over_text_prompts_as_over_token_ids(model_path, tmp_path):
    """The acceptance: every registered strategy at budget 4 over the text-only app, side by side
    with the same app taking token ids (one thread each: the two share this machine's cores)."""
    strategies = ",".join(registry.names())
    with (
        text_only_app(model_path, "--threads", "1") as text_url,
        text_only_app(model_path, "--threads", "1", "--token-ids") as ids_url,
    ):
        runs = {}
        for mode, url in (("text", text_url), ("ids", ids_url)):
            runs[mode] = ponder(
                *("compare", PROBLEM, "--server", url, "--tokenizer", model_path, "--strategies", strategies),
                *("--budget", "4", "--max-tokens", "48", "--prm", "arithmetic", "--json"),
                *("--db", str(tmp_path / f"{mode}.db")),
            )
        said = {mode: p.communicate(timeout=600) for mode, p in runs.items()}
        served = {"text": stats(text_url), "ids": stats(ids_url)}
    out = {}
    for mode, p in runs.items():
        stdout, err = said[mode]
        assert p.returncode == 0, err[-3000:]
        no_python_warning(err)
        out[mode] = json.loads(stdout)
        assert [r["status"] for r in out[mode]["runs"]] == ["done"] * len(registry.names())
        # The tokens Ponder counted are those the server generated (less the connect probe's one).
        probe, *answers = served[mode]["answers"]
        assert probe[1] == 1
        assert sum(r["generated_tokens"] for r in out[mode]["runs"]) == sum(a[0] for a in answers)
    err = said["text"][1]
    assert "ponder: note:" in err and "takes no token-id prompts (HTTP 422: 'prompt' string_type)" in err
    assert "takes no token-id prompts" not in said["ids"][1]
    with Store.open(tmp_path / "text.db", readonly=True) as store:
        backend = store.session(out["text"]["session_id"]).settings["backend"]
        assert backend["prompts"] == "text" and backend["seam"] == "retokenized"
        assert backend["dialect"] == "openai" and backend["token_ids_refused"].startswith("HTTP 422")
    text, ids = shapes(tmp_path / "text.db"), shapes(tmp_path / "ids.db")
    assert text.keys() == ids.keys() == set(registry.names())
    for name in text:
        assert text[name][0] == ids[name][0], name  # the same tree
    budgets = {
        mode: [(r["strategy"], r["budget"], r["generations"]) for r in out[mode]["runs"]] for mode in out
    }
    assert budgets["text"] == budgets["ids"]
    if "reads back as other tokens" not in err:  # no seam split: the very same tokens everywhere
        assert text == ids


@pytest.mark.parametrize("status", [400, 500])
def test_a_validation_refusal_of_any_status_means_text_prompts(model_path, status):
    from engine.backends.server.pool import describe_server

    with text_only_app(model_path, "--refuse", str(status)) as url:
        (info,) = describe_server(url, tokenizer=model_path)
    assert info.text_prompts and info.dialect == "openai" and not info.tokenizes
    assert info.refused_ids == f"HTTP {status}: 'prompt' string_type"
    assert info.served_as == "" and info.tokenizer == model_path


def test_a_500_without_a_validation_body_is_one_line(model_path, tmp_path):
    with text_only_app(model_path, "--broken") as url:
        p = ponder("compare", PROBLEM, "--server", url, "--tokenizer", model_path, "--prm", "arithmetic")
        _out, err = p.communicate(timeout=120)
    assert p.returncode == 2
    assert err.strip().splitlines() == [err.strip()] and "HTTP 500" in err and "probe" in err
    no_python_warning(err)
