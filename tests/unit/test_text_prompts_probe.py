"""Endpoints that take text prompts only, learned at connect time (issue 42): a refusal of the probe's
token-id prompt whose body says the prompt's type is wrong, with any status (400, 422, even 500),
means text prompts; a 500 without such a body is still an error, in one line. Token texts given
instead of ids are read back as the tokens they are (a character split across tokens too), with their
logprobs; what an endpoint lacks is one note, never a Python warning. Against the HTTP stub and a
tokenizer of bytes (no model); the real pydantic server is tests/servers/test_text_prompts.py."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from server_stub import Stub, js

from engine.backends.server.client import ServerClient
from engine.backends.server.dialects.gateway import Gateway
from engine.backends.server.dialects.openai import aligned
from engine.backends.server.pool import LoopThread, ServerPool
from engine.backends.server.wire import CompletionRequest, ServerError
from engine.tokenizer import LocalTokenizer

# What FastAPI answers a prompt of token ids when it validates ``prompt: str | list[str]``.
PYDANTIC = {
    "detail": [
        {
            "type": "string_type",
            "loc": ["body", "prompt", "str"],
            "msg": "Input should be a valid string",
            "input": [0],
        },
        {
            "type": "string_type",
            "loc": ["body", "prompt", "list[str]", 0],
            "msg": "Input should be a valid string",
        },
    ]
}
# The server: the same errors said as text in a 500.
AS_TEXT = {
    "error": {
        "message": "2 validation errors:\n  {'type': 'string_type', 'loc': ('body', 'prompt', 'str'), "
        "'msg': 'Input should be a valid string', 'input': [0]}"
    }
}


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


def text_only(status: int, refusal: Any, answer: Any = None) -> Stub:
    """An OpenAI-compatible endpoint (no /props, no /tokenize) refusing token ids as ``refusal``."""
    s = Stub()
    for route in (("GET", "/props"), ("POST", "/tokenize"), ("POST", "/detokenize")):
        del s.routes[route]
    s.routes[("GET", "/v1/models")] = lambda b: js({"data": [{"id": "m", "owned_by": "pydantic"}]})

    def complete(body: Any) -> Any:
        if not isinstance(body.get("prompt"), str):
            return js(refusal, status) if not isinstance(refusal, str) else (status, {}, refusal.encode())
        return answer or js(
            {"model": "m", "choices": [{"text": "4", "finish_reason": "length"}], "usage": {}}
        )

    s.routes[("POST", "/v1/completions")] = complete
    return s


@pytest.mark.parametrize(
    ("status", "refusal"), [(400, PYDANTIC), (422, PYDANTIC), (500, PYDANTIC), (500, AS_TEXT)]
)
def test_a_refusal_that_says_the_prompts_type_is_wrong_means_text_prompts(loop, status, refusal):
    with text_only(status, refusal) as s:
        c = ServerClient(s.url, retries=0)
        info = loop.run(c.probe())
        assert type(c.dialect) is Gateway and not c.dialect.token_prompts
        assert info.dialect == "openai" and info.text_prompts and not info.tokenizes  # recorded as before
        assert info.refused_ids.startswith(f"HTTP {status}") and "prompt" in info.refused_ids
        loop.run(c.close())


def test_a_500_without_a_validation_body_is_still_an_error_in_one_line(loop):
    with text_only(500, "Internal Server Error") as s:
        c = ServerClient(s.url, retries=0)
        with pytest.raises(ServerError) as e:
            loop.run(c.probe())
        said = str(e.value)
        assert "HTTP 500" in said and "Internal Server Error" in said and "probe" in said
        assert "\n" not in said
        loop.run(c.close())


def test_the_cli_says_a_broken_endpoint_in_one_line(capsys):
    from engine.cli import main

    with text_only(500, {"error": {"message": "CUDA error:\n out of memory"}}) as s:
        status = main(["compare", "2+2?", "--server", s.url, "--prm", "arithmetic", "--budget", "1"])
    out, err = capsys.readouterr()
    assert status == 2 and "HTTP 500" in err and "out of memory" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "Warning" not in err


class Bytes(LocalTokenizer):
    """A tokenizer of bytes (ids 0-255) and a few words, the way a byte-level BPE is made."""

    kind = "bytes"
    WORDS = ("Caf", "é", " =", " 4", ".\n\n", "\n\n")

    def __init__(self) -> None:
        super().__init__("bytes")
        self.n_vocab = 256 + len(self.WORDS)

    def _raw_piece(self, token: int) -> bytes:
        return bytes([token]) if token < 256 else self.WORDS[token - 256].encode()

    def special_text(self, token: int) -> str:
        return ""

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        out, raw = [], text.encode()
        while raw:
            word = next((w for w in self.WORDS if raw.startswith(w.encode())), None)
            out.append(256 + self.WORDS.index(word) if word else raw[0])
            raw = raw[len(word.encode()) if word else 1 :]
        return out


def test_token_texts_are_read_back_as_their_tokens_a_split_character_too():
    tok = Bytes()
    ids = [256, 257, 258, 259, 260]  # "Caf" "é" " =" " 4" ".\n\n"
    texts = [tok.piece(t).decode() for t in ids]
    assert tok.ids_of_texts(texts, "Café = 4.\n\n") == ids
    # "✓" sampled as its three bytes: a server decoding each token alone writes each as nothing
    split = [0xE2, 0x9C, 0x93]
    assert tok.ids_of_texts(["Caf", "", "", "", " 4"], "Caf✓ 4") == [256, *split, 259]
    assert tok.ids_of_texts(["Caf", "", " 4"], "Caf✓ 4") is None  # no split into three tokens


def test_logprobs_of_tokens_split_otherwise_keep_their_totals():
    assert aligned(["ab", "c"], [-1.0, -2.0], ["a", "bc"]) == [0.0, -3.0]
    assert aligned(["a", "b", "c"], [-1.0, -2.0, -4.0], ["ab", "c"]) == [-3.0, -4.0]


def test_token_texts_and_logprobs_of_a_legacy_answer_come_back_exact(loop):
    """The answer a pydantic server gives: token texts, their logprobs, the stop string left out of
    the text but counted among the tokens."""
    lp = {
        "tokens": ["Caf", "", "", "", " 4", ".\n\n"],
        "token_logprobs": [-0.5, -0.1, -0.2, -0.3, -0.4, -0.6],
    }
    answer = js(
        {
            "model": "m",
            "choices": [{"text": "Caf✓ 4.", "finish_reason": "stop", "logprobs": lp}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 6},
        }
    )
    with text_only(422, PYDANTIC, answer) as s:
        c = ServerClient(s.url, retries=0, tokenizer=Bytes())
        loop.run(c.probe())
        req = CompletionRequest(prompt=(256,), max_tokens=8, stop=("\n\n",))
        done = loop.run(c.complete(req))
        assert done.ids == [256, 0xE2, 0x9C, 0x93, 259, 260] and done.finish == "stop"
        assert done.text == "Caf✓ 4.\n\n" and done.logprobs == [-0.5, -0.1, -0.2, -0.3, -0.4, -0.6]
        assert "".join(done.pieces) == done.text
        sent = [b for m, p, b in s.calls if p == "/v1/completions"][-1]
        assert sent["prompt"] == "Caf"  # the prompt's tokens as text
        assert c.text_prompts == 1 and c.seam_splits == 0
        loop.run(c.close())


def test_a_prompt_that_reads_back_otherwise_is_counted_and_noted_once(loop, caplog):
    tok = Bytes()
    with text_only(422, PYDANTIC) as s:
        c = ServerClient(s.url, retries=0, tokenizer=tok)
        loop.run(c.probe())
        seam = (ord("."), ord("\n"), ord("\n"))  # ".\n\n" generated byte by byte: one token read back
        with caplog.at_level("INFO", logger="ponder.note"):
            for _ in range(2):
                loop.run(c.complete(CompletionRequest(prompt=seam, max_tokens=4)))
        assert c.text_prompts == 2 and c.seam_splits == 2
        notes = [r.getMessage() for r in caplog.records if "reads back" in r.getMessage()]
        assert len(notes) == 1 and "joins a continuation" in notes[0]
        loop.run(c.close())


def test_the_pool_records_text_prompts_and_notes_what_it_does_instead(loop, caplog):
    with text_only(500, PYDANTIC) as s, caplog.at_level("INFO", logger="ponder.note"):
        c = ServerClient(s.url, retries=0, tokenizer=Bytes())
        loop.run(c.probe())
        pool = ServerPool([c], loop, own_loop=False)
        rec = pool.record()
        assert rec["prompts"] == "text" and rec["seam"] == "retokenized"
        assert rec["dialect"] == "openai" and rec["token_ids_refused"].startswith("HTTP 500: 'prompt'")
        loop.run(c.complete(CompletionRequest(prompt=(52,), max_tokens=1)))  # an answer without logprobs
        notes = [r.getMessage() for r in caplog.records if r.name == "ponder.note"]
        assert any("gives no logprobs" in n and "p = 1" in n for n in notes)
        loop.run(c.close())


def test_the_cli_prints_notes_and_warnings_as_one_line_each_without_a_source_path(capsys):
    import logging

    from engine.cli import _notes_to_stderr

    with _notes_to_stderr():
        warnings.warn("This model has no chat template; Ponder uses a plain prompt.", stacklevel=1)
        logging.getLogger("ponder.note").info("http://x gives no logprobs:\n tokens recorded with p = 1")
        logging.getLogger("ponder.note").info("http://x gives no logprobs:\n tokens recorded with p = 1")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "ponder: note: This model has no chat template; Ponder uses a plain prompt.",
        "ponder: note: http://x gives no logprobs: tokens recorded with p = 1",
    ]
    assert "UserWarning" not in err and ".py:" not in err
