"""How a PRM reads a model, written once for every backend.

A :class:`VerdictFormat` says, for a question and the steps so far, the prompt after which the next
token is the verdict on the last step (:meth:`VerdictFormat.prefix`), and which tokens say good and
bad. The prompt is a tuple of segments (:class:`Text`, :class:`Tag`, :class:`Chat`) that each
backend turns into token ids its own way: in process with the GGUF's vocabulary and chat template
(:func:`render`), on a server with its tokenizer and template (``engine/backends/server/prm.py``).
A :class:`HeadFormat` is a classification head's: the chat one candidate goes as, and its step tag.

The formats themselves are the kinds' (``engine/prm/kinds/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class Text:
    """Text tokenized as it is (``add_special``: with the vocabulary's BOS)."""

    text: str
    add_special: bool = False
    parse_special: bool = False


@dataclass(frozen=True)
class Tag:
    """The format's step tag, as its single token."""


@dataclass(frozen=True)
class Chat:
    """A conversation rendered by the model's chat template, ready for the assistant's reply."""

    messages: tuple[tuple[str, str], ...]  # (role, content)


Segment = Text | Tag | Chat
Prompt = tuple[Segment, ...]


@dataclass(frozen=True)
class VerdictFormat:
    """A PRM read at one token: P(good) / (P(good) + P(bad)) among the verdict tokens predicted
    after :meth:`prefix`. ``special``: the verdict words and the tag may be special tokens (a
    PRM's own vocabulary); ``spellings``: every spelling of a verdict word is tried (``yes``,
    ``Yes``, `` yes``, …; a judge reads an instruct model's free reply), else the word and the word
    after a space."""

    name: str
    good: tuple[str, ...]
    bad: tuple[str, ...]
    step_tag: str | None = None
    special: bool = True
    spellings: bool = False

    def prefix(self, question: str, steps: Sequence[str]) -> Prompt:
        """The prompt whose next token is the verdict on ``steps[-1]``."""
        raise NotImplementedError

    def forms(self, word: str) -> list[str]:
        """The spellings of a verdict word whose single tokens count."""
        if self.spellings:
            return [word, word.capitalize(), " " + word, " " + word.capitalize(), word.upper()]
        return [word, " " + word]

    def verdicts(self) -> str:
        """The verdict words, for a message: ``yes/no``, ``'+'/'-'``."""
        if self.spellings:
            return "/".join((*self.good, *self.bad))
        return "/".join(repr(w) for w in (*self.good, *self.bad))

    def with_settings(self, settings: dict[str, Any]) -> VerdictFormat:
        """This format with a model's own step tag and verdict tokens (``models/catalog.toml``'s
        ``step_tag``, ``good_token``, ``bad_token``)."""
        changes: dict[str, Any] = {}
        if "good_token" in settings:
            changes["good"] = (str(settings["good_token"]),)
        if "bad_token" in settings:
            changes["bad"] = (str(settings["bad_token"]),)
        if "step_tag" in settings and self.step_tag is not None:
            changes["step_tag"] = str(settings["step_tag"])
        return replace(self, **changes)


@dataclass(frozen=True)
class HeadFormat:
    """A classification-head PRM's input: its system prompt, the question, the steps each ended by
    ``step_tag``; the head scores every tag."""

    name: str
    system_prompt: str
    step_tag: str

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """A candidate as the PRM reads it: each step stripped, the tag after every one."""
        tag = self.step_tag
        body = "".join(s.replace(tag, "").strip() + tag for s in steps)
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": question},
            {"role": "assistant", "content": body},
        ]


class Vocabulary(Protocol):
    """What :func:`render` needs of a model: a llama.cpp backend in process."""

    def tokenize(self, text: str, add_special: bool = ..., parse_special: bool = ...) -> list[int]: ...

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = ...) -> str: ...


def render(
    prompt: Prompt, vocab: Vocabulary, tag_id: int | None, memo: dict[Segment, list[int]]
) -> list[int]:
    """``prompt`` as token ids in process. ``memo`` keeps each segment's tokens across the prefixes
    of one candidate (each step's prefix repeats the ones before)."""
    out: list[int] = []
    for seg in prompt:
        if isinstance(seg, Tag):
            if tag_id is None:
                raise ValueError("a format with a step tag needs the tag's token")
            out.append(tag_id)
            continue
        toks = memo.get(seg)
        if toks is None:
            if isinstance(seg, Text):
                toks = vocab.tokenize(seg.text, add_special=seg.add_special, parse_special=seg.parse_special)
            else:
                msgs = [{"role": r, "content": c} for r, c in seg.messages]
                text = vocab.render_chat(msgs, add_generation_prompt=True)
                toks = vocab.tokenize(text, add_special=False, parse_special=True)
            memo[seg] = toks
        out += toks
    return out
