"""The model's own tokenizer held by Ponder (for servers that cannot tokenize): a GGUF's vocabulary and
a Hugging Face tokenizer folder give the very tokens, chats and pieces the in-process path makes."""

from __future__ import annotations

import pytest
from hf_tokenizer import write_hf_folder

from engine.backends.server.pool import local_tokenizer
from engine.backends.server.wire import ServerInfo
from engine.errors import PonderError
from engine.protocol import SYSTEM_PROMPT
from engine.tokenizer import GGUFTokenizer, HFTokenizer, TokenizerError, find_tokenizer, open_tokenizer

TEXTS = [
    "What is 12 + 30? Answer: 42.",
    "  Leading spaces, trailing  \n\n",
    "Ünïcödé — ✓ \\boxed{x} 日本語 🙂",
    "1234567 digits 3.14159 and $2,000",
    "<|im_start|>user\nHi<|im_end|>\n",
    "",
]
CHATS = [
    [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "Tom has 3 apples."}],
    [{"role": "user", "content": "Ünïcödé — ✓"}, {"role": "assistant", "content": "8.\n\n"}],
]


@pytest.fixture(scope="module")
def gguf_tok(model_path):
    return open_tokenizer(model_path)


@pytest.fixture(scope="module")
def hf_tok(model_path, tmp_path_factory):
    return open_tokenizer(
        write_hf_folder(model_path, tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct")
    )


def test_a_gguf_tokenizer_is_the_in_process_one(gguf_tok, backend):
    assert isinstance(gguf_tok, GGUFTokenizer) and gguf_tok.n_vocab == backend.n_vocab
    for text in TEXTS:
        for add_special in (False, True):
            for parse_special in (False, True):
                assert gguf_tok.tokenize(text, add_special, parse_special) == backend.tokenize(
                    text, add_special, parse_special
                ), (text, add_special, parse_special)
    for msgs in CHATS:
        assert gguf_tok.chat_tokens(msgs)[0] == backend.chat_tokens(msgs)
    ids = backend.tokenize("".join(TEXTS), False, True)
    for t in [*ids, *gguf_tok.specials]:
        assert gguf_tok.piece(t) == backend.piece(t), t
    assert gguf_tok.piece(backend.eog_tokens()[0]) == b""  # a stop token is no text
    assert gguf_tok.n_params == backend.info.n_params


def test_a_prompt_as_text_reads_back_to_its_tokens(gguf_tok, hf_tok):
    """What an endpoint that takes only text prompts is sent: it tokenizes it back to the same ids."""
    for tok in (gguf_tok, hf_tok):
        for msgs in CHATS:
            ids, _ = tok.chat_tokens(msgs)
            text = tok.prompt_text(ids)
            assert "<|im_start|>" in text and tok.tokenize(text, False, True) == ids


def test_a_hugging_face_tokenizer_folder_gives_the_same_tokens_chats_and_pieces(gguf_tok, hf_tok):
    assert isinstance(hf_tok, HFTokenizer) and hf_tok.n_vocab == gguf_tok.n_vocab
    for text in TEXTS:
        for parse_special in (False, True):
            assert hf_tok.tokenize(text, False, parse_special) == gguf_tok.tokenize(
                text, False, parse_special
            ), (
                text,
                parse_special,
            )
    for msgs in CHATS:
        assert hf_tok.chat_tokens(msgs)[0] == gguf_tok.chat_tokens(msgs)[0]
    ids = gguf_tok.tokenize("".join(TEXTS), False, True)
    assert [hf_tok.piece(t) for t in ids] == [gguf_tok.piece(t) for t in ids]
    assert hf_tok.specials == gguf_tok.specials
    assert (hf_tok.bos_text, hf_tok.eos_text) == (gguf_tok.bos_text, gguf_tok.eos_text)
    # The parameter count for FLOPs, from config.json: the GGUF's own count.
    assert hf_tok.n_params == gguf_tok.n_params == 134_515_008


def test_bad_tokenizer_paths_are_said_clearly(tmp_path):
    with pytest.raises(TokenizerError, match="no such file or folder"):
        open_tokenizer(tmp_path / "missing.gguf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(TokenizerError, match="neither a GGUF nor a tokenizer.json"):
        open_tokenizer(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="no tokenizer.json there"):
        open_tokenizer(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a tokenizer.json"):
        open_tokenizer(tmp_path / "broken")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 7)
    with pytest.raises(Exception, match="cut.gguf"):  # the GGUF reader's own clear error
        open_tokenizer(tmp_path / "cut.gguf")


def test_a_served_models_tokenizer_is_found_by_its_name(model_path, isolated_dirs):
    from pathlib import Path

    name = Path(model_path).name
    assert find_tokenizer(name) == Path(model_path)  # llama-server names its model by the file
    assert find_tokenizer(name.replace(".Q4_1.gguf", "")) == Path(model_path)  # without quantization
    assert find_tokenizer("unknown") is None and find_tokenizer("no-such-model") is None
    # vLLM names its model by the repository: its snapshot in the Hugging Face cache.
    snap = isolated_dirs / "hf" / "models--someone--tiny-math" / "snapshots" / "abc"
    write_hf_folder(model_path, snap)
    assert find_tokenizer("someone/tiny-math") == snap


def test_a_tokenizer_whose_vocabulary_is_not_the_served_models_is_refused(model_path):
    info = ServerInfo(url="http://x", dialect="llama-server", model="m", models=["m"], slots=1, n_vocab=32000)
    with pytest.raises(PonderError, match="has 49152 tokens, but http://x serves a model with 32000"):
        local_tokenizer(model_path, [info])
    assert local_tokenizer(None, [info]) is None  # llama-server tokenizes: none needed
