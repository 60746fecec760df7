"""Self-checking parameters, seeds, and chat prompts."""

from __future__ import annotations

import pytest

from engine.chat import PLAIN_TEMPLATE_WARNING, render_chat
from engine.errors import InvalidRequestError
from engine.sampling import SamplingParams, derive_seed


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.0}, "min_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_sampling_params_are_rejected(kw, msg):
    with pytest.raises(InvalidRequestError, match=msg):
        SamplingParams(**kw)


def test_a_single_stop_string_is_accepted():
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)


def test_llama_seed_never_means_random():
    assert SamplingParams(seed=0xFFFFFFFF).llama_seed != 0xFFFFFFFF
    assert SamplingParams(seed=2**40 + 5).llama_seed == 5


def test_derived_seeds_are_stable_and_distinct():
    seeds = {derive_seed(1, node) for node in range(10_000)}
    assert len(seeds) == 10_000
    assert derive_seed(1, 7) == derive_seed(1, 7)
    assert derive_seed(1, 7) != derive_seed(2, 7)
    assert derive_seed(1, 2, 3) != derive_seed(1, 3, 2)


def test_models_own_template_is_used(fresh):
    text = fresh.render_chat([{"role": "user", "content": "Hi there"}])
    assert text.startswith("<|im_start|>system")
    assert "<|im_start|>user\nHi there<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    toks = fresh.chat_tokens([{"role": "user", "content": "Hi there"}])
    # Special tokens are parsed as single tokens, not spelled out.
    assert fresh.tokenize("<|im_start|>", add_special=False)[0] == toks[0]


def test_no_template_falls_back_with_a_warning():
    text, warning = render_chat(None, [{"role": "user", "content": "2+2?"}])
    assert warning == PLAIN_TEMPLATE_WARNING
    assert text == "User: 2+2?\n\nAssistant:"


def test_a_broken_template_falls_back_instead_of_failing():
    text, warning = render_chat("{% for m in messages %}{{ m.content", [{"role": "user", "content": "x"}])
    assert "failed to render" in warning and text.startswith("User: x")


def test_backend_warns_for_a_model_without_template(fresh, monkeypatch):
    monkeypatch.setattr(fresh, "chat_template", None)
    monkeypatch.setattr(fresh, "template_warning", None)
    with pytest.warns(UserWarning, match="no chat template"):
        toks = fresh.chat_tokens([{"role": "user", "content": "2+2?"}])
    assert fresh.detokenize(toks).endswith("Assistant:")
    assert fresh.template_warning == PLAIN_TEMPLATE_WARNING


def test_bad_messages_are_rejected():
    with pytest.raises(InvalidRequestError):
        render_chat("x", [])
    with pytest.raises(InvalidRequestError):
        render_chat("x", [{"content": "no role"}])
