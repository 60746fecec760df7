"""Endpoints beyond llama-server, the parts that need no engine: what Ponder finds out at connect
time, the request body for a text-only endpoint, the one-line error without a tokenizer, an end
token an engine writes out, a model's parameters from its config, a served name matched to a file.
(The real gateway, vLLM and tokenizers are in tests/servers and tests/integration.)"""

from __future__ import annotations

import json

import pytest
from server_stub import Stub, js

from engine.backends.server.client import ServerClient
from engine.backends.server.dialects.openai import openai_body
from engine.backends.server.launch import Gateway, free_port
from engine.backends.server.pool import LoopThread, ServerPool
from engine.backends.server.wire import CompletionRequest
from engine.errors import PonderError
from engine.tokenizer import _norm, params_from_config

MODELS = {"object": "list", "data": [{"id": "unknown", "object": "model", "owned_by": "local"}]}


def gateway_stub() -> Stub:
    """What the SGLang Model Gateway answers (seen from sglang-router 0.3.2): no /props, no
    /tokenize, its model "unknown", token-id prompts refused, text prompts answered naming the model."""
    s = Stub()
    del s.routes[("GET", "/props")], s.routes[("POST", "/tokenize")]
    s.routes[("GET", "/v1/models")] = lambda b: js(MODELS)

    def complete(body):
        if not isinstance(body.get("prompt"), str):
            return js({"error": "prompt: data did not match any variant of untagged enum StringOrArray"}, 422)
        return js(
            {
                "model": "mystery-model.Q4_K_M.gguf",
                "choices": [{"text": "4", "index": 0, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        )

    s.routes[("POST", "/v1/completions")] = complete
    return s


def test_a_gateway_is_found_out_at_connect_time_and_without_a_tokenizer_is_one_line():
    with gateway_stub() as s:
        lt = LoopThread()
        try:
            c = ServerClient(s.url, retries=0)
            info = lt.run(c.probe())
            lt.run(c.close())
        finally:
            lt.close()
        assert info.dialect == "openai" and not info.tokenizes and info.text_prompts
        assert info.served_as == "mystery-model.Q4_K_M.gguf"  # the name its answers give
        with pytest.raises(PonderError) as e:
            ServerPool.connect([s.url], retries=0)
        msg = str(e.value)
        assert "\n" not in msg and s.url in msg and "mystery-model.Q4_K_M.gguf" in msg
        assert "cannot tokenize" in msg and "text only" in msg and "--tokenizer PATH" in msg
        assert "Tokenizer in the app's Server… dialog" in msg


def test_a_text_prompt_goes_as_text_and_token_ids_as_ids():
    req = CompletionRequest(prompt=(1, 2, 3), max_tokens=8, stop=("\n\n",))
    assert openai_body(req, "m")["prompt"] == [1, 2, 3]
    body = openai_body(req, "m", "<|im_start|>user\nHi")
    assert body["prompt"] == "<|im_start|>user\nHi" and body["max_tokens"] == 8 and body["n"] == 1


def test_an_end_token_an_engine_writes_out_is_no_text():
    """vLLM with skip_special_tokens off ends a sample on "<|im_end|>", its id the last of the ids:
    the text drops it and the token renders empty from then on (also for a sample cut at its length);
    a plain last token stays (llama-server's OpenAI face leaves the EOS out of the ids)."""
    answers = iter(
        [
            {"text": "So 4.<|im_end|>", "finish_reason": "stop", "stop_reason": None, "ids": [10, 11, 2]},
            {"text": "Yes.<|im_end|>", "finish_reason": "length", "stop_reason": None, "ids": [12, 2]},
            {"text": "Done.", "finish_reason": "stop", "ids": [13]},
        ]
    )
    pieces = {10: "So", 11: " 4.", 12: "Yes.", 13: "Done.", 2: "<|im_end|>"}

    def complete(body):
        if body.get("prompt") == [0]:  # the connect-time probe
            return js({"model": "m", "choices": [{"text": "", "index": 0, "finish_reason": "length"}]})
        a = next(answers)
        lp = {"tokens": [f"token_id:{t}" for t in a["ids"]], "token_logprobs": [-0.1] * len(a["ids"])}
        choice = {"text": a["text"], "index": 0, "finish_reason": a["finish_reason"], "logprobs": lp}
        if "stop_reason" in a:
            choice["stop_reason"] = a["stop_reason"]
        return js({"model": "m", "choices": [choice], "usage": {"completion_tokens": len(a["ids"])}})

    with Stub() as s:
        del s.routes[("GET", "/props")]
        s.routes[("GET", "/v1/models")] = lambda b: js({"data": [{"id": "m"}]})
        s.routes[("POST", "/v1/completions")] = complete
        s.routes[("POST", "/tokenize")] = lambda b: js({"tokens": [1]})
        s.routes[("POST", "/detokenize")] = lambda b: js({"prompt": "".join(pieces[t] for t in b["tokens"])})
        lt = LoopThread()
        try:
            c = ServerClient(s.url, retries=0)
            lt.run(c.probe())
            answers_ = [lt.run(c.complete(CompletionRequest(prompt=(1,), max_tokens=4))) for _ in range(3)]
            lt.run(c.close())
        finally:
            lt.close()
    first, cut, plain = answers_
    assert first.text == "So 4." and first.finish == "eos" and first.pieces == ["So", " 4.", ""]
    assert cut.text == "Yes." and cut.pieces == ["Yes.", ""]
    assert plain.text == "Done." and plain.pieces == ["Done."]


def test_a_models_parameters_from_its_config(tmp_path):
    smollm2 = {
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(smollm2))
    assert params_from_config(tmp_path / "config.json") == 134_515_008  # the GGUF's own count
    (tmp_path / "config.json").write_text(json.dumps({**smollm2, "tie_word_embeddings": False}))
    assert params_from_config(tmp_path / "config.json") == 134_515_008 + 49152 * 576  # an output head
    (tmp_path / "config.json").write_text(json.dumps({"text_config": smollm2}))  # a multimodal wrapper
    assert params_from_config(tmp_path / "config.json") == 134_515_008
    (tmp_path / "config.json").write_text("{}")
    assert params_from_config(tmp_path / "config.json") is None
    assert params_from_config(tmp_path / "missing.json") is None


def test_served_names_match_files_whatever_the_quantization_or_folder():
    assert _norm("SmolLM2-135M-Instruct.Q4_1.gguf") == _norm("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert _norm("qwen2.5-math-1.5b-instruct-q4_k_m.gguf") == _norm("Qwen/Qwen2.5-Math-1.5B-Instruct")
    assert _norm("Llama-3.2-1B-Instruct-f16.gguf") == _norm("Llama 3.2 1B Instruct")
    assert _norm("model-a") != _norm("model-b")


def test_the_gateway_starts_with_its_own_metrics_port_and_balance(monkeypatch, tmp_path):
    smg = tmp_path / "smg"
    smg.write_text("")
    monkeypatch.setenv("PONDER_GATEWAY", str(smg))
    g = Gateway(["http://a:1", "http://b:2"], balance_abs=2, port=free_port())
    cmd = g.command()
    assert cmd[:2] == [str(smg), "launch"] and cmd[
        cmd.index("--worker-urls") + 1 : cmd.index("--policy")
    ] == [
        "http://a:1",
        "http://b:2",
    ]
    assert (
        cmd[cmd.index("--policy") + 1] == "cache_aware"
        and cmd[cmd.index("--balance-abs-threshold") + 1] == "2"
    )
    assert int(cmd[cmd.index("--prometheus-port") + 1]) == g.metrics_port != 29000  # two gateways never clash
