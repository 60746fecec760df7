"""Any OpenAI-compatible endpoint, through ``/v1/completions`` with the prompt as token ids (or text,
where it takes no ids) and ``logprobs``, plus the extensions vLLM and SGLang read to return token
ids (``return_tokens_as_token_ids``) and keep the stop string. Token ids come from those, or
llama-server's ``logprobs.content[].id``, else from ``/tokenize``. One completion per request,
whatever the endpoint claims. This module's :class:`OpenAI` is the most general dialect, asked
last: an endpoint no other dialect recognises (a proxy without ``/tokenize``); vLLM's and the
gateway's modules build on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.backends.server.dialects.base import DEFAULT_SLOTS, Body, Dialect, Endpoint, Probe, register
from engine.backends.server.wire import (
    Completion,
    CompletionRequest,
    ServerError,
    ServerInfo,
    to_float,
    to_int,
)

_Top = list[tuple[int | None, str, float]]


def openai_body(req: CompletionRequest, model: str, prompt_text: str | None = None) -> Body:
    """The /v1/completions request body, with the extensions vLLM and SGLang read to return
    token ids and keep the stop string (others ignore them). ``prompt_text``: the prompt as text,
    for an endpoint that takes no token ids (a gateway)."""
    body: Body = {
        "model": model,
        "prompt": list(req.prompt) if prompt_text is None else prompt_text,
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "seed": req.seed,
        "stop": list(req.stop) or None,
        "logprobs": max(1, req.n_probs),
        "n": 1,
        "stream": False,
        "ignore_eos": req.ignore_eos,
        # vLLM: token ids in the logprobs, the stop string kept; SGLang: the stop string kept.
        "return_tokens_as_token_ids": True,
        "include_stop_str_in_output": True,
        "no_stop_trim": True,
        "skip_special_tokens": False,
        "min_p": req.min_p,
        "cache_prompt": True,
    }
    if req.top_k > 0:
        body["top_k"] = req.top_k
    return body


def parse_openai(url: str, r: Any, req: CompletionRequest) -> tuple[Completion, int]:
    """One /v1/completions answer to ``req``, its pieces left empty (the client assembles them), its
    ids and logprobs as far as the server gave them; and the completion tokens the server counted
    (0: it did not say)."""
    try:
        choice = r["choices"][0]
        text = str(choice.get("text") or "")
        reason = choice.get("finish_reason")
        usage = r.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ServerError(url, f"answered /v1/completions without a choice: {str(r)[:160]}") from None
    ids, lps, top, texts = _openai_tokens(choice.get("logprobs") or {})
    n_done = to_int(usage.get("completion_tokens")) or len(ids) or len(texts)
    if texts and not ids:  # token texts: a stop string left out of the text is still among them
        said = "".join(texts)  # (generation ends at the first stop string: none is in the text)
        trimmed = n_done > len(texts) or any(x in said for x in req.stop)
    else:
        trimmed = n_done > len(ids)
    finish, text = _openai_finish(choice, reason, text, trimmed, req)
    details = usage.get("prompt_tokens_details") or {}
    cached = to_int(details.get("cached_tokens")) or 0
    done = Completion(
        ids=ids,
        text=text,
        pieces=[],
        logprobs=lps,
        finish=finish,
        prompt_n=max(0, (to_int(usage.get("prompt_tokens")) or len(req.prompt)) - cached),
        cached_n=cached,
        top=top,
        token_texts=texts,
    )
    return done, to_int(usage.get("completion_tokens")) or 0


def _openai_tokens(lp: Any) -> tuple[list[int], list[float], _Top, list[str]]:
    """Token ids, their logprobs and the first position's top logprobs, from a choice's logprobs;
    where the server gave token texts, not ids (the legacy format without vLLM's extension), no ids
    and those texts with their logprobs."""
    ids: list[int] = []
    lps: list[float] = []
    top: _Top = []
    texts: list[str] = []
    if isinstance(lp, dict) and isinstance(lp.get("content"), list):  # llama-server, newer OpenAI
        for k, e in enumerate(lp["content"]):
            if isinstance(e, dict) and isinstance(e.get("id"), int):
                ids.append(int(e["id"]))
                lps.append(to_float(e.get("logprob")) or 0.0)
                if k == 0:
                    top = [
                        (t.get("id"), str(t.get("token", "")), to_float(t.get("logprob")) or -1e30)
                        for t in e.get("top_logprobs") or []
                        if isinstance(t, dict)
                    ]
    elif isinstance(lp, dict) and isinstance(lp.get("tokens"), list):  # vLLM, SGLang (legacy)
        values = list(lp.get("token_logprobs") or [])
        values += [None] * (len(lp["tokens"]) - len(values))
        for tok, value in zip(lp["tokens"], values, strict=False):
            tid = _token_id(tok)
            ids.append(-1 if tid is None else tid)
            lps.append(to_float(value) or 0.0)
        if lp.get("top_logprobs"):
            first = lp["top_logprobs"][0] or {}
            top = [(_token_id(t), str(t), to_float(v) or -1e30) for t, v in first.items()]
        if any(t < 0 for t in ids):
            ids, texts = [], [str(t) for t in lp["tokens"]]
    return ids, lps, top, texts


def aligned(texts: list[str], lps: list[float], pieces: list[str]) -> list[float]:
    """The logprobs a server gave for its tokens' ``texts``, moved onto tokens of the same text split
    as ``pieces`` (the local tokenizer's): each server token's to the local token its text ends in,
    so every span's total stays the server's."""
    out = [0.0] * len(pieces)
    ends, at = [], 0
    for p in pieces:
        at += len(p)
        ends.append(at)
    j, at = 0, 0
    for t, lp in zip(texts, lps, strict=False):
        at += len(t)
        while j < len(ends) - 1 and ends[j] < at:
            j += 1
        if out:
            out[j] += lp
    return out


def _openai_finish(
    choice: dict[str, Any], reason: Any, text: str, ids_missing: bool, req: CompletionRequest
) -> tuple[str, str]:
    """Why the completion ended (eos | stop | length), and its text with the stop string it ended
    on (a step keeps its delimiter). ``ids_missing``: the server counted more tokens than it gave."""
    # Why it ended: vLLM says stop_reason (None: EOS; the stop string), SGLang matched_stop;
    # llama-server's OpenAI path says neither, and leaves the stop word out of text and logprobs.
    said = "stop_reason" in choice or "matched_stop" in choice
    stop_reason = choice.get("stop_reason", choice.get("matched_stop"))
    if reason != "stop":
        finish = "length"
    elif isinstance(stop_reason, str):
        finish = "stop"
    elif said:
        finish = "eos"
    elif req.stop and (ids_missing or any(text.endswith(x) for x in req.stop)):
        finish = "stop"
    else:
        finish = "eos"
    if finish == "stop" and req.stop and not any(text.endswith(x) for x in req.stop):
        text += stop_reason if isinstance(stop_reason, str) else req.stop[0]  # a step keeps its delimiter
    return finish, text


def spread(text: str, n: int) -> list[str]:
    """``text`` over ``n`` pieces: all of it in the last."""
    if n <= 0:
        return []
    return [""] * (n - 1) + [text]


def _token_id(tok: Any) -> int | None:
    if isinstance(tok, int):
        return tok
    if isinstance(tok, str) and tok.startswith("token_id:"):
        try:
            return int(tok[9:])
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class OpenAI(Dialect):
    key: ClassVar[str] = "openai"
    name: ClassVar[str] = "openai"
    order: ClassVar[int] = 1000  # the most general: asked last, it takes any endpoint

    @classmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        return cls(tokenizes=await probe.tokenizes(), token_prompts=await probe.takes_token_ids())

    async def describe(self, probe: Probe) -> ServerInfo:
        entry = probe.entry
        version = await probe.version()
        return ServerInfo(
            url=probe.client.url,
            dialect=self.name,
            model=probe.model,
            models=probe.models,
            slots=probe.client.parallel or DEFAULT_SLOTS,
            n_ctx=to_int(entry.get("max_model_len")),
            build=(f"{entry.get('owned_by', '')} {version}").strip(),
            owned_by=str(entry.get("owned_by") or ""),
            tokenizes=self.tokenizes,
            text_prompts=not self.token_prompts,
            refused_ids="" if self.token_prompts else probe.refused_ids,
            served_as=await probe.served_as(),
            pooling=self.pooling,
        )

    def request(self, req: CompletionRequest, model: str, prompt_text: str | None = None) -> tuple[str, Body]:
        return "/v1/completions", openai_body(req, model, prompt_text)

    async def complete(self, client: Endpoint, req: CompletionRequest) -> list[Completion]:
        if req.n != 1:
            raise ServerError(client.url, "several completions per request are sent to llama-server only")
        path, body = self.request(
            req, client.info.model if client.info else "", client.prompt_text(req.prompt)
        )
        r = await client.call("POST", path, body)
        done, n_counted = parse_openai(client.url, r, req)
        # A stop token the server wrote out (vLLM with skip_special_tokens off ends on "<|im_end|>"):
        # not text, as in process.
        done.text = await client.without_end_token(done)
        ids, lps, text = done.ids, done.logprobs, done.text
        said = list(done.token_texts)
        if said:  # token texts, not ids: each looked up in the local tokenizer (exact where unique)
            ids = client.ids_of_texts(said, text) or []
            lps = lps if ids else []
        looked_up = bool(said and ids)
        if not ids and not said and text:
            client.note_once(
                "logprobs",
                f"{client.url} gives no logprobs: tokens are read from the text by the tokenizer and "
                "recorded with p = 1 (no shading)",
            )
        if not ids or len(ids) < n_counted:
            # Ids the server did not give: from the text (exact for what the model would read back).
            known = b"".join([await client.piece(t) for t in ids]).decode("utf-8", errors="replace")
            rest = text[len(known) :] if text.startswith(known) else text
            more = await client.tokenize(rest, add_special=False, parse_special=False) if rest else []
            if not text.startswith(known):
                ids, lps = more, [0.0] * len(more)
            else:
                ids, lps = ids + more, lps + [0.0] * len(more)
        if len(lps) < len(ids):
            lps += [0.0] * (len(ids) - len(lps))
        _text, pieces = await client.assemble(ids)
        if said and not looked_up:  # the same text split otherwise: its logprobs moved over
            lps = aligned(said, done.logprobs, pieces)
        if "".join(pieces) != text:  # keep the server's text; spread it over the pieces we have
            pieces = spread(text, len(ids))
        done.ids, done.logprobs, done.pieces = ids, lps[: len(ids)], pieces
        return [done]

    def tokenize_body(self, text: str, add_special: bool, parse_special: bool, model: str) -> Body:
        # vLLM and SGLang read "prompt"; llama-server (on its OpenAI-compatible face) "content".
        return {
            "model": model,
            "prompt": text,
            "add_special_tokens": add_special,
            "content": text,
            "add_special": add_special,
            "parse_special": parse_special,
        }

    def detokenize_body(self, token: int, model: str) -> Body:
        return {"model": model, "tokens": [token]}

    def detokenized(self, body: Any) -> str:
        return str(body.get("prompt", "")) if isinstance(body, dict) else ""


register(OpenAI)
