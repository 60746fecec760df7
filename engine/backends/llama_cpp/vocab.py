"""Text in and out: tokenizing, token pieces, the GGUF's own chat template, end-of-generation
tokens. A mixin of :class:`~engine.backends.llama_cpp.backend.Backend` (it uses the backend's
``_vocab``, ``n_vocab`` and ``chat_template``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import llama_cpp

from engine import llama_lib
from engine.backends.llama_cpp.core import BackendCore


class VocabMixin(BackendCore):
    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        self._check_thread()
        return llama_lib.tokenize(self._vocab, text, add_special, parse_special)

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render empty in generated text)."""
        p = self._pieces.get(token)
        if p is None:
            p = self._pieces[token] = llama_lib.token_piece(self._vocab, token, False)
        return p

    def detokenize(self, tokens: Iterable[int]) -> str:
        self._check_thread()
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return llama_lib.token_piece(self._vocab, token, True).decode("utf-8", errors="replace")

    def render_chat(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, **variables: object
    ) -> str:
        """Render messages with the GGUF's own ``tokenizer.chat_template`` (falling back to a plain
        template, with :attr:`template_warning` set, when the model has none)."""
        self._check_thread()
        from engine.chat import render_chat

        text, warning = render_chat(
            self.chat_template,
            messages,
            bos_token=self._special_text(int(llama_cpp.llama_vocab_bos(self._vocab))),
            eos_token=self._special_text(int(llama_cpp.llama_vocab_eos(self._vocab))),
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
        if warning and self.template_warning is None:
            self.template_warning = warning
            warnings.warn(warning, stacklevel=2)
        return text

    def chat_tokens(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True, **variables: object
    ) -> list[int]:
        """Tokens of a rendered chat prompt. The template already writes BOS where the model wants
        it, so BOS is only added when the rendered text does not start with it."""
        return self.prompt_tokens(self.render_chat(messages, add_generation_prompt, **variables))

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a rendered chat prompt (BOS added only when the text does not start with it)."""
        bos = self._special_text(int(llama_cpp.llama_vocab_bos(self._vocab)))
        add_special = not (bos and text.startswith(bos))
        return self.tokenize(text, add_special=add_special, parse_special=True)

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token of the vocabulary (EOS, EOT, <|im_end|> ...)."""
        if self._eog is None:
            self._eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        return self._eog
