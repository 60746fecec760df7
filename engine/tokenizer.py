"""A model's own tokenizer, held by Ponder itself: for servers that cannot tokenize or render a chat.

llama-server tokenizes and gives its chat template (``/tokenize``, ``/props``); an endpoint that speaks
only the OpenAI API (the SGLang Model Gateway in front of several servers, LiteLLM's proxy, Ollama's
OpenAI face, hosted APIs) does neither. Ponder then tokenizes, renders chats and reads token pieces
with the model's own tokenizer, from one of:

* **a GGUF** of the model (any quantization: only its vocabulary is read). llama.cpp's vocabulary-only
  load, so the tokens, the pieces and the chat template are exactly those of the in-process path;
* **a Hugging Face tokenizer**: a folder with ``tokenizer.json`` (and ``tokenizer_config.json`` for the
  chat template and special tokens; ``config.json`` for the parameter count), or the file itself,
  read with the ``tokenizers`` library.

:func:`find_tokenizer` looks for one by the served model's name among the GGUFs Ponder lists and the
Hugging Face cache. Pieces follow the in-process rule: a special token (``<|im_end|>``) renders empty
in generated text; :meth:`LocalTokenizer.prompt_text` writes specials out, so a server that takes only
text prompts reads the same tokens back.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import PonderError


class TokenizerError(PonderError):
    """A tokenizer that cannot be read, said with its path."""


class LocalTokenizer:
    """What every local tokenizer gives. Thread-safe for reading (the server client calls it from its
    event loop's thread, the model list from another)."""

    kind = ""  # "gguf" | "hf"

    def __init__(self, path: str) -> None:
        self.path = path
        self.n_vocab = 0
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self.add_bos = False
        self.n_params: int | None = None
        self._pieces: dict[int, bytes] = {}
        self._specials: set[int] = set()
        self._by_text: dict[str, int] | None = None  # a token's text -> the token (-1: several)
        self._by_bytes: dict[bytes, list[int]] = {}  # a token's bytes -> the tokens
        self._longest = 1  # bytes of the longest token

    # --- what each kind provides -------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        raise NotImplementedError

    def _raw_piece(self, token: int) -> bytes:
        """The bytes of a token that is not special."""
        raise NotImplementedError

    def special_text(self, token: int) -> str:
        """A special token's own text (``<|im_end|>``); '' for others."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # --- shared -------------------------------------------------------------------------------------

    def is_special(self, token: int) -> bool:
        return token in self._specials

    @property
    def specials(self) -> frozenset[int]:
        """Control and end-of-generation tokens: empty in generated text."""
        return frozenset(self._specials)

    def piece(self, token: int) -> bytes:
        """A generated token's bytes; special tokens render empty, as in process."""
        p = self._pieces.get(token)
        if p is None:
            p = b"" if token in self._specials or not 0 <= token < self.n_vocab else self._raw_piece(token)
            self._pieces[token] = p
        return p

    def prompt_text(self, ids: Sequence[int]) -> str:
        """Text a server that takes only text prompts tokenizes back to ``ids``: special tokens written
        out (the server parses them), and a leading BOS left to the server when it adds one itself."""
        ids = list(ids)
        if self.add_bos and ids and self.special_text(ids[0]) == self.bos_text and self.bos_text:
            ids = ids[1:]
        out = bytearray()
        for t in ids:
            out += self.special_text(t).encode("utf-8") if t in self._specials else self.piece(t)
        return out.decode("utf-8", errors="replace")

    def reads_back(self, ids: Sequence[int]) -> bool:
        """Whether :meth:`prompt_text` of ``ids`` tokenizes back to exactly ``ids`` (as a server
        that takes text reads it: BOS added where the model wants one, special tokens parsed). Not
        always: generated tokens need not be how the tokenizer splits their text, and text forced
        after a prompt may merge with its last token, where the prompt and its continuation meet."""
        ids = list(ids)
        return self.tokenize(self.prompt_text(ids), add_special=True, parse_special=True) == ids

    def ids_of_texts(self, texts: Sequence[str], text: str | None = None) -> list[int] | None:
        """The tokens whose texts a server gave instead of their ids (the legacy completions
        format's ``logprobs.tokens``), one per text: each looked up by its text where that spells
        ``text`` (the completion's text, where known); else the one split of ``text`` into
        ``len(texts)`` tokens that each read as their text (a server that decodes each token alone
        writes a character split across tokens as nothing: only the whole text has its bytes).
        None: no such split."""
        if self._by_text is None:
            self._tables()
        assert self._by_text is not None
        quick = [self._by_text.get(x, -1) for x in texts]
        goal = (text or "").encode("utf-8")
        if all(t >= 0 for t in quick):
            got = b"".join(self.piece(t) for t in quick)
            if text is None or got.startswith(goal) or goal.startswith(got):
                return quick
        if text is None:
            return None
        canonical = self.tokenize(text, add_special=False, parse_special=False)
        if len(canonical) == len(texts) and all(
            self.piece(t).decode("utf-8", errors="ignore") == x for t, x in zip(canonical, texts, strict=True)
        ):
            return canonical  # (of the splits that fit, the tokenizer's own)
        return self._split_as(goal, texts)

    def _tables(self) -> None:
        by_text: dict[str, int] = {}
        by_bytes: dict[bytes, list[int]] = {}
        for t in range(self.n_vocab):
            if t in self._specials or not self.piece(t):
                continue
            by_bytes.setdefault(self.piece(t), []).append(t)
            try:
                key = self.piece(t).decode("utf-8")
            except UnicodeDecodeError:
                continue
            by_text[key] = -1 if key in by_text else t
        self._by_bytes, self._longest = by_bytes, max(map(len, by_bytes), default=1)
        self._by_text = by_text

    def _split_as(self, goal: bytes, texts: Sequence[str]) -> list[int] | None:
        """Tokens, one per text, each reading as its text (its bytes decoded alone, the rest
        ignored), whose bytes spell ``goal`` and then what the last ones read as (a stop string's
        token may reach past the text)."""
        assert self._by_text is not None
        frontier: dict[int, list[int]] = {0: []}  # byte position -> the tokens that reach it
        for want in texts:
            nxt: dict[int, list[int]] = {}
            for at, ids in frontier.items():
                whole = self._by_text.get(want, -1)
                if (
                    whole >= 0
                    and self.piece(whole).startswith(goal[at:])
                    and len(goal) - at < len(self.piece(whole))
                ):
                    nxt.setdefault(at + len(self.piece(whole)), ids + [whole])
                for n in range(min(self._longest, len(goal) - at), 0, -1):  # longest first, as BPE
                    for t in self._by_bytes.get(goal[at : at + n], ()):
                        if self.piece(t).decode("utf-8", errors="ignore") == want:
                            nxt.setdefault(at + n, ids + [t])
            if not nxt:
                return None
            frontier = nxt
        ends = [at for at in frontier if at >= len(goal)]
        return frontier[min(ends)] if ends else None

    def chat_tokens(
        self, messages: Sequence[dict[str, str]], **variables: object
    ) -> tuple[list[int], str | None]:
        """A chat prompt's tokens, rendered with the model's own template, BOS added only when the
        rendered text does not start with it (the in-process rule); and a warning when the model has
        no template."""
        from engine.chat import chat_prompt

        text, add_special, warning = chat_prompt(
            self.chat_template, messages, self.bos_text, self.eos_text, **variables
        )
        return self.tokenize(text, add_special=add_special, parse_special=True), warning

    def record(self) -> dict[str, Any]:
        """What a session records of it."""
        return {"path": self.path, "kind": self.kind, "n_vocab": self.n_vocab}


# --- a GGUF's vocabulary -----------------------------------------------------------------------------


class GGUFTokenizer(LocalTokenizer):
    """llama.cpp's vocabulary-only load of a GGUF: no weights are read."""

    kind = "gguf"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        import llama_cpp

        from engine import llama_lib
        from engine.gguf_info import check_vocab, read_gguf

        info = read_gguf(path)  # a clear error for a file that is not a GGUF
        check_vocab(info)  # llama.cpp would abort the process on a damaged vocabulary
        llama_lib.ensure_init()
        mp = llama_cpp.llama_model_default_params()
        mp.vocab_only = True
        mark = llama_lib.log_mark()
        model = llama_cpp.llama_model_load_from_file(path.encode("utf-8"), mp)
        if not model:
            why = llama_lib.errors_since(mark) or "llama.cpp could not read its vocabulary"
            raise TokenizerError(f"{path}: {why}")
        self._llama = llama_cpp
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self._lock = threading.Lock()
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_params = info.n_params or None
        self.chat_template = info.chat_template
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self._specials = {
            t
            for t in range(self.n_vocab)
            if llama_cpp.llama_vocab_is_control(self._vocab, t)
            or llama_cpp.llama_vocab_is_eog(self._vocab, t)
        }
        self.bos_text = self.special_text(int(llama_cpp.llama_vocab_bos(self._vocab)))
        self.eos_text = self.special_text(int(llama_cpp.llama_vocab_eos(self._vocab)))

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        from engine import llama_lib

        return llama_lib.tokenize(self._vocab, text, add_special, parse_special)

    def _raw_piece(self, token: int) -> bytes:
        from engine import llama_lib

        return llama_lib.token_piece(self._vocab, token, False)

    def special_text(self, token: int) -> str:
        from engine import llama_lib

        if not 0 <= token < self.n_vocab:
            return ""
        return llama_lib.token_piece(self._vocab, token, True).decode("utf-8", errors="replace")

    def close(self) -> None:
        with self._lock:
            if self._model is not None:
                self._llama.llama_model_free(self._model)
                self._model = None


# --- a Hugging Face tokenizer --------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte is written as -> the byte."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content") or "")
    return str(value or "")


class HFTokenizer(LocalTokenizer):
    """``tokenizer.json`` read with the ``tokenizers`` library; the chat template and special tokens
    from ``tokenizer_config.json`` beside it."""

    kind = "hf"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        try:
            from tokenizers import Tokenizer
        except ImportError:  # pragma: no cover - a dependency
            raise TokenizerError("reading a Hugging Face tokenizer needs the 'tokenizers' package") from None
        p = Path(path)
        folder = p if p.is_dir() else p.parent
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise TokenizerError(f"{path}: no tokenizer.json there (a Hugging Face model folder has one)")
        try:
            self._tok = Tokenizer.from_file(str(file))
            spec = json.loads(file.read_text(encoding="utf-8"))
        except Exception as e:  # noqa: BLE001 - the library's own errors, said with the path
            raise TokenizerError(f"{file}: not a tokenizer.json the tokenizers library reads ({e})") from None
        self._lock = threading.Lock()
        self.n_vocab = int(self._tok.get_vocab_size(with_added_tokens=True))
        added = self._tok.get_added_tokens_decoder()
        self._specials = {int(i) for i, t in added.items() if getattr(t, "special", False)}
        self._added = {int(i): str(t.content) for i, t in added.items()}
        dec = json.dumps(spec.get("decoder") or {})
        self._byte_level = '"ByteLevel"' in dec
        self._unbyte = _bytes_to_unicode()
        conf: dict[str, Any] = {}
        conf_file = folder / "tokenizer_config.json"
        if conf_file.is_file():
            try:
                conf = json.loads(conf_file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise TokenizerError(f"{conf_file}: not readable JSON ({e})") from None
        template = conf.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            named = {str(t.get("name")): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if not template and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        self.chat_template = template if isinstance(template, str) and template else None
        self.bos_text = _token_text(conf.get("bos_token"))
        self.eos_text = _token_text(conf.get("eos_token"))
        self.add_bos = bool(conf.get("add_bos_token", False))
        self.n_params = params_from_config(folder / "config.json")

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        with self._lock:  # encode_special_tokens is the tokenizer's state
            self._tok.encode_special_tokens = not parse_special
            try:
                return list(self._tok.encode(text, add_special_tokens=add_special).ids)
            finally:
                self._tok.encode_special_tokens = False

    def _raw_piece(self, token: int) -> bytes:
        if token in self._added:
            return self._added[token].encode("utf-8")
        s = self._tok.id_to_token(token) or ""
        if self._byte_level:
            try:
                return bytes(self._unbyte[c] for c in s)
            except KeyError:
                return s.encode("utf-8")
        m = _BYTE_TOKEN.match(s)
        if m:
            return bytes([int(m.group(1), 16)])
        return s.replace("\u2581", " ").encode("utf-8")

    def special_text(self, token: int) -> str:
        return self._added.get(token, "") if token in self._specials else ""


def params_from_config(path: Path) -> int | None:
    """A transformer's parameter count from its ``config.json`` (dense decoder layers: attention with
    grouped KV heads, a gated MLP, the embeddings and an untied head); None when it does not say."""
    try:
        c = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    c = c.get("text_config", c) if isinstance(c, dict) else {}
    try:
        h = int(c["hidden_size"])
        layers = int(c["num_hidden_layers"])
        inter = int(c["intermediate_size"])
        vocab = int(c["vocab_size"])
        heads = int(c["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return None
    kv = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or h // max(1, heads))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    per_layer = attn + mlp + 2 * h
    head = 0 if c.get("tie_word_embeddings", False) else vocab * h
    return vocab * h + layers * per_layer + h + head


def params_of(path: str | os.PathLike[str]) -> int | None:
    """A model's parameter count from its tokenizer's source, without opening the tokenizer: a GGUF's
    header, or a Hugging Face folder's config.json."""
    p = Path(path)
    try:
        if p.is_file() and p.suffix.lower() == ".gguf":
            from engine.gguf_info import read_gguf

            return read_gguf(p).n_params or None
    except PonderError:
        return None
    return params_from_config((p if p.is_dir() else p.parent) / "config.json")


# --- opening and finding -------------------------------------------------------------------------------

_open: dict[str, LocalTokenizer] = {}
_open_lock = threading.Lock()


def open_tokenizer(path: str | os.PathLike[str]) -> LocalTokenizer:
    """The tokenizer at ``path`` (a GGUF, a folder with tokenizer.json, or the file), opened once per
    process and shared. Raises TokenizerError with what is wrong."""
    p = Path(path).expanduser()
    if not p.exists():
        raise TokenizerError(
            f"{p}: no such file or folder (--tokenizer takes a GGUF or a tokenizer.json folder)"
        )
    key = str(p.resolve())
    with _open_lock:
        tok = _open.get(key)
        if tok is None:
            if p.is_file() and p.suffix.lower() == ".gguf":
                tok = GGUFTokenizer(str(p))
            elif p.is_dir() or p.name.endswith(".json"):
                tok = HFTokenizer(str(p))
            else:
                raise TokenizerError(f"{p}: neither a GGUF nor a tokenizer.json (or a folder holding one)")
            _open[key] = tok
        return tok


def _norm(name: str) -> str:
    """A model name reduced for matching: no folders, no .gguf, no quantization tag, lower case."""
    stem = name.rsplit("/", 1)[-1]
    stem = re.sub(r"\.gguf$", "", stem, flags=re.I)
    stem = re.sub(r"[-_.](?:i?q\d[\w]*|f16|f32|bf16)$", "", stem, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "", stem.lower())


def find_tokenizer(model: str) -> Path | None:
    """A tokenizer for a served model, by its name: a GGUF Ponder lists whose file or model name
    matches, else a Hugging Face cache snapshot of that repository holding tokenizer.json."""
    if not model or model == "unknown":
        return None
    want = _norm(model)
    if not want:
        return None
    p = Path(model).expanduser()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return p
    from engine.models import discover, hf_cache_dir

    for entry in discover():
        if not entry.ok:
            continue
        names = [Path(entry.path).name]
        if entry.info is not None and entry.info.name:
            names.append(entry.info.name)
        if any(_norm(n) == want for n in names):
            return Path(entry.path)
    if "/" in model:
        repo = hf_cache_dir() / ("models--" + model.strip("/").replace("/", "--"))
        for snap in sorted((repo / "snapshots").glob("*")) if repo.is_dir() else []:
            if (snap / "tokenizer.json").is_file():
                return snap
    return None
