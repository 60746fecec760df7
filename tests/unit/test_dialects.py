"""The dialects an endpoint speaks (engine/backends/server/dialects/), each on its own: how it is
recognised at connect time (against the HTTP stub answering as that engine does), what it can do,
the request bodies it sends and how it reads answers; and that a new dialect is one module that
registers itself. (Real llama-server, vLLM and the gateway are in tests/servers.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from server_stub import Stub, js

from engine.backends.server.client import ServerClient
from engine.backends.server.dialects import base
from engine.backends.server.dialects.base import Body, Dialect, Probe
from engine.backends.server.dialects.gateway import Gateway
from engine.backends.server.dialects.llama_server import LlamaServer, parse_llama
from engine.backends.server.dialects.openai import OpenAI, parse_openai
from engine.backends.server.dialects.vllm import VLLM
from engine.backends.server.pool import LoopThread, ServerPool
from engine.backends.server.wire import CompletionRequest, ServerError, ServerInfo

REQ = CompletionRequest(prompt=(1, 2, 3), max_tokens=8, temperature=0.7, seed=5, stop=("\n\n",), n_probs=4)


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


def _answer(text: str = "4", ids: tuple[int, ...] = (52,), model: str = "m") -> Any:
    lp = {"tokens": [f"token_id:{t}" for t in ids], "token_logprobs": [-0.25] * len(ids)}
    return js(
        {
            "model": model,
            "choices": [{"text": text, "index": 0, "finish_reason": "length", "logprobs": lp}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(ids)},
        }
    )


def openai_stub(
    *, tokenize: bool = True, ids: bool = True, generates: bool = True, pools: bool = False
) -> Stub:
    """An OpenAI-compatible endpoint (no /props): vLLM or SGLang by default; without /tokenize a
    proxy; refusing token ids a gateway; without completions but with /pooling a reward model."""
    s = Stub()
    del s.routes[("GET", "/props")]
    s.routes[("GET", "/v1/models")] = lambda b: js(
        {"data": [{"id": "m", "owned_by": "vllm", "max_model_len": 2048}]}
    )
    s.routes[("GET", "/version")] = lambda b: js({"version": "0.32.0"})
    if tokenize:
        s.routes[("POST", "/tokenize")] = lambda b: js({"tokens": [ord(c) for c in b.get("prompt", "")]})
    else:
        del s.routes[("POST", "/tokenize")]
    s.routes[("POST", "/detokenize")] = lambda b: js({"prompt": "".join(chr(t) for t in b["tokens"])})
    if pools:
        s.routes[("POST", "/pooling")] = lambda b: js({"data": [{"data": [[0.2, 0.8]]}]})

    def complete(body: Body) -> Any:
        if not ids and not isinstance(body.get("prompt"), str):
            return js({"error": "prompt: data did not match any variant of untagged enum StringOrArray"}, 422)
        return _answer(model="served-name" if not ids else "m")

    if generates:
        s.routes[("POST", "/v1/completions")] = complete
    return s


def _probe(loop: LoopThread, url: str) -> ServerClient:
    c = ServerClient(url, retries=0)
    loop.run(c.probe())
    return c


# --- the registry ---------------------------------------------------------------------------------


def test_every_dialect_registers_itself_and_probing_asks_the_most_general_last():
    order = base.probe_order()
    assert [d.key for d in order] == ["llama-server", "vllm", "gateway", "openai"]
    assert [d.name for d in order] == ["llama-server", "openai", "openai", "openai"]  # what sessions record
    assert base.get("vllm") is VLLM and base.get("gateway") is Gateway
    with pytest.raises(KeyError, match="no dialect 'nope'"):
        base.get("nope")


def test_what_each_dialect_can_do():
    llama, vllm, gateway, plain = LlamaServer(), VLLM(), Gateway(), OpenAI(tokenizes=False)
    assert llama.capabilities() == {
        "tokenizes": True,
        "token_prompts": True,
        "several_per_request": True,
        "logprobs": "per-token",
        "verdict_top": 100,
        "says_slots": True,
        "metrics": "/metrics",
        "pooling": False,
    }
    assert llama.health_path == "/health" and llama.renders_chats
    for d in (vllm, gateway, plain):
        assert not d.several_per_request and d.verdict_top == 20 and d.logprobs == "choices"
        assert d.health_path == "/v1/models" and not d.says_slots and not d.renders_chats
    assert vllm.tokenizes and vllm.token_prompts and vllm.metrics_path == "/metrics"
    assert not gateway.tokenizes and not gateway.token_prompts and gateway.metrics_path is None
    assert not plain.tokenizes and plain.token_prompts and plain.metrics_path is None


# --- llama-server ---------------------------------------------------------------------------------


def test_llama_server_asks_for_token_ids_plain_sampling_and_several_completions_at_once():
    path, body = LlamaServer().request(REQ, "stub.gguf")
    assert path == "/completion" and body["prompt"] == [1, 2, 3] and body["n_predict"] == 8
    assert body["return_tokens"] and body["cache_prompt"] and body["n_probs"] == 4 and body["seed"] == 5
    assert body["repeat_penalty"] == 1.0 and body["dry_multiplier"] == 0.0 and body["model"] == "stub.gguf"
    assert "n_cmpl" not in body
    _path, body = LlamaServer().request(CompletionRequest((1,), 4, n=3), "")
    assert body["n_cmpl"] == 3 and "model" not in body
    assert LlamaServer().tokenize_body("hi", True, False, "m") == {
        "content": "hi",
        "add_special": True,
        "parse_special": False,
        "with_pieces": False,
    }
    assert LlamaServer().detokenize_body(7, "m") == {"tokens": [7]}
    assert LlamaServer().detokenized({"content": "x"}) == "x" and LlamaServer().detokenized([]) == ""


def test_llama_server_answers_are_matched_up_by_token_id():
    pieces: dict[int, bytes] = {}
    r = {
        "tokens": [10, 11, 12],
        "stop_type": "word",
        "completion_probabilities": [  # the stop word's token (11) left out, as the server does
            {
                "id": 10,
                "logprob": -0.5,
                "bytes": [65],
                "top_logprobs": [{"id": 10, "token": "A", "logprob": -0.5}],
            },
            {"id": 12, "logprob": -0.25, "bytes": [66]},
        ],
        "timings": {"prompt_n": 7, "cache_n": 2},
    }
    done = parse_llama("http://x", r, pieces)
    assert done.ids == [10, 11, 12] and done.logprobs == [-0.5, 0.0, -0.25] and done.finish == "stop"
    assert done.prompt_n == 7 and done.cached_n == 2 and done.top == [(10, "A", -0.5)]
    assert pieces == {10: b"A", 12: b"B"} and done.text == ""  # the client assembles the text
    with pytest.raises(ServerError, match="http://x: answered /completion without tokens"):
        parse_llama("http://x", {"content": "4"}, pieces)


def test_llama_server_is_recognised_by_its_props_and_spoken_to_in_its_own_api(loop):
    with Stub() as s:
        s.routes[("POST", "/completion")] = lambda b: js(
            [
                {"index": 1, "tokens": [66], "stop_type": "eos", "completion_probabilities": []},
                {"index": 0, "tokens": [65], "stop_type": "limit", "completion_probabilities": []},
            ]
        )
        c = _probe(loop, s.url)
        assert isinstance(c.dialect, LlamaServer) and c.info is not None
        assert c.info.dialect == "llama-server" and c.info.server_slots == 2 and c.info.build == "b0-stub"
        outs = loop.run(c.complete_n(CompletionRequest((1,), 1, n=2)))
        assert [o.text for o in outs] == ["A", "B"] and [o.finish for o in outs] == ["length", "eos"]
        assert loop.run(c.tokenize("ab")) == [97, 98] and loop.run(c.health())
        sent = {p: b for m, p, b in s.calls if m == "POST"}
        assert sent["/tokenize"]["with_pieces"] is False and sent["/completion"]["n_cmpl"] == 2
        assert ("GET", "/health", None) in s.calls and not any(
            p == "/v1/completions" for _m, p, _b in s.calls
        )
        loop.run(c.close())
        pool = ServerPool.connect([s.url], loop=loop)
        assert pool.group_limit == 2 and pool.dialect.verdict_top == 100


# --- the OpenAI-compatible family -----------------------------------------------------------------


def test_an_openai_request_asks_for_token_ids_back_and_the_stop_string_kept():
    path, body = OpenAI().request(REQ, "m")
    assert path == "/v1/completions" and body["prompt"] == [1, 2, 3] and body["logprobs"] == 4
    assert body["n"] == 1 and body["return_tokens_as_token_ids"] and body["include_stop_str_in_output"]
    assert body["stop"] == ["\n\n"] and "top_k" not in body
    _path, body = Gateway().request(REQ, "m", "<|im_start|>user\nHi")
    assert body["prompt"] == "<|im_start|>user\nHi"
    tok = OpenAI().tokenize_body("hi", False, True, "m")
    assert (
        tok["prompt"] == tok["content"] == "hi" and tok["model"] == "m" and tok["add_special_tokens"] is False
    )
    assert OpenAI().detokenize_body(7, "m") == {"model": "m", "tokens": [7]}
    assert OpenAI().detokenized({"prompt": "x"}) == "x"


def test_openai_answers_in_either_logprob_shape_and_the_stop_it_ended_on():
    vllm = {
        "choices": [
            {
                "text": "So 4.",
                "finish_reason": "stop",
                "stop_reason": "\n\n",
                "logprobs": {
                    "tokens": ["token_id:5", "token_id:6"],
                    "token_logprobs": [-0.1, -0.2],
                    "top_logprobs": [{"token_id:5": -0.1, "token_id:9": -3.0}],
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    done, counted = parse_openai("http://x", vllm, REQ)
    assert done.ids == [5, 6] and done.logprobs == [-0.1, -0.2] and counted == 2
    assert done.text == "So 4.\n\n" and done.finish == "stop"  # a step keeps its delimiter
    assert done.prompt_n == 6 and done.cached_n == 4 and done.top[0] == (5, "token_id:5", -0.1)
    content = {
        "choices": [
            {"text": "A", "finish_reason": "stop", "logprobs": {"content": [{"id": 3, "logprob": -1.0}]}}
        ]
    }
    done, counted = parse_openai("http://x", content, REQ)
    assert done.ids == [3] and done.finish == "eos" and counted == 0
    with pytest.raises(ServerError, match="without a choice"):
        parse_openai("http://x", {"choices": []}, REQ)


def test_vllm_is_an_endpoint_that_tokenizes_and_takes_token_ids(loop):
    with openai_stub() as s:
        c = _probe(loop, s.url)
        assert type(c.dialect) is VLLM and c.info is not None
        i = c.info
        assert i.dialect == "openai" and i.tokenizes and not i.text_prompts and not i.pooling
        assert i.build == "vllm 0.32.0" and i.n_ctx == 2048 and i.slots == 16 and i.served_as == ""
        out = loop.run(c.complete(CompletionRequest((1,), 4)))
        assert out.ids == [52] and out.text == "4" and out.pieces == ["4"]
        with pytest.raises(
            ServerError, match="several completions per request are sent to llama-server only"
        ):
            loop.run(c.complete_n(CompletionRequest((1,), 4, n=2)))
        assert loop.run(c.health()) and ("GET", "/v1/models", None) in s.calls[-1:]
        loop.run(c.close())
        pool = ServerPool.connect([s.url], loop=loop)
        assert (
            pool.group_limit == 1 and pool.dialect.verdict_top == 20 and pool.record()["dialect"] == "openai"
        )


def test_a_reward_model_on_vllms_pooling_api_is_vllm_that_only_pools(loop):
    with openai_stub(generates=False, pools=True) as s:
        c = _probe(loop, s.url)
        assert type(c.dialect) is VLLM and c.dialect.pooling
        assert c.info is not None and c.info.pooling and not c.info.text_prompts
        assert sum(1 for _m, p, _b in s.calls if p == "/v1/completions") == 1  # no text prompt tried


def test_the_gateway_is_an_endpoint_that_refuses_token_ids(loop):
    with openai_stub(tokenize=False, ids=False) as s:
        c = _probe(loop, s.url)
        assert type(c.dialect) is Gateway and c.info is not None
        assert c.info.dialect == "openai" and c.info.text_prompts and not c.info.tokenizes
        assert c.info.served_as == "served-name"  # the name its answers give
        with pytest.raises(ServerError, match="takes text prompts only, and no tokenizer was given"):
            c.request(REQ)


def test_any_other_openai_endpoint_is_the_plain_dialect(loop):
    with openai_stub(tokenize=False) as s:
        c = _probe(loop, s.url)
        assert type(c.dialect) is OpenAI and c.info is not None
        assert c.info.dialect == "openai" and not c.info.tokenizes and not c.info.text_prompts


def test_a_renamed_info_speaks_its_new_name_and_an_unprobed_client_the_most_general(loop):
    with Stub() as s:
        c = _probe(loop, s.url)
        assert c.info is not None
        c.info.dialect = "openai"  # llama-server through its OpenAI face (tests/servers does this)
        assert type(c.dialect) is OpenAI and c.dialect.tokenizes
        path, _body = c.request(REQ)
        assert path == "/v1/completions"
        loop.run(c.close())
    assert type(ServerClient("http://127.0.0.1:1").dialect) is OpenAI
    info = ServerInfo(url="http://x", dialect="llama-server", model="m", models=["m"], slots=1)
    assert type(base.recorded(info)) is LlamaServer


# --- a new dialect is one module ------------------------------------------------------------------


@dataclass(frozen=True)
class Teapot(OpenAI):
    """What a new dialect's module holds: its class, how it recognises itself, one register()."""

    key: ClassVar[str] = "teapot"
    name: ClassVar[str] = "teapot"
    order: ClassVar[int] = 5
    verdict_top: ClassVar[int] = 7

    @classmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        return cls() if probe.entry.get("owned_by") == "teapot" else None


def test_a_new_dialect_is_one_registered_class_that_probing_asks_first(loop):
    base.register(Teapot)
    try:
        assert base.probe_order()[0] is Teapot
        with openai_stub() as s:
            s.routes[("GET", "/v1/models")] = lambda b: js({"data": [{"id": "m", "owned_by": "teapot"}]})
            pool = ServerPool.connect([s.url], loop=loop)
            assert type(pool.dialect) is Teapot and pool.dialect.verdict_top == 7
            assert pool.record()["dialect"] == "teapot"
            assert not any(p == "/tokenize" for _m, p, _b in s.calls)  # it asked nothing more
        with openai_stub() as s:  # not a teapot: the next in order
            assert type(_probe(loop, s.url).dialect) is VLLM
    finally:
        base.unregister("teapot")
    assert "teapot" not in [d.key for d in base.probe_order()]
    with pytest.raises(ValueError, match="needs a key"):
        base.register(type("Nameless", (OpenAI,), {"key": ""}))
