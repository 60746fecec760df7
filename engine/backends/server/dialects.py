"""The two dialects a server speaks: the request bodies Ponder sends and what it reads from the
answers, without any I/O (:class:`~engine.backends.server.client.ServerClient` sends them, and
fills in what needs the server again: token pieces and ids it did not give).

* ``llama-server``: its own ``/completion`` endpoint with ``cache_prompt``, ``return_tokens`` and
  ``n_probs``: prompts and continuations travel as token ids;
* ``openai``: ``/v1/completions`` with the prompt as token ids and ``logprobs``, plus the extensions
  vLLM and SGLang read to return token ids and keep the stop string.
"""

from __future__ import annotations

from typing import Any

from engine.backends.server.wire import Completion, CompletionRequest, ServerError, to_float, to_int

_Top = list[tuple[int | None, str, float]]


def llama_body(req: CompletionRequest, model: str) -> dict[str, Any]:
    """The /completion request body: plain temperature sampling (every other sampler of
    llama-server's chain set to do nothing), token ids in and out, the prefix cache on."""
    body: dict[str, Any] = {
        "prompt": list(req.prompt),
        "n_predict": req.max_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "top_k": req.top_k,
        "min_p": req.min_p,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "dry_multiplier": 0.0,
        "xtc_probability": 0.0,
        "seed": req.seed,
        "stop": list(req.stop),
        "ignore_eos": req.ignore_eos,
        "n_probs": req.n_probs,
        "return_tokens": True,
        "cache_prompt": True,
        "stream": False,
    }
    if req.n > 1:
        body["n_cmpl"] = req.n
    if model:
        body["model"] = model
    return body


def openai_body(req: CompletionRequest, model: str, prompt_text: str | None = None) -> dict[str, Any]:
    """The /v1/completions request body, with the extensions vLLM and SGLang read to return
    token ids and keep the stop string (others ignore them). ``prompt_text``: the prompt as text,
    for an endpoint that takes no token ids (a gateway)."""
    body: dict[str, Any] = {
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


def parse_llama(url: str, r: dict[str, Any], pieces: dict[int, bytes]) -> Completion:
    """One /completion answer, its text and pieces left empty (the client assembles them from the
    tokens' bytes). The bytes the answer carries go into ``pieces`` (token id -> bytes)."""
    try:
        ids = [int(t) for t in r["tokens"]]
        probs = r.get("completion_probabilities") or []
        stop_type = str(r.get("stop_type", ""))
        timings = r.get("timings") or {}
    except (KeyError, TypeError, ValueError):
        raise ServerError(url, f"answered /completion without tokens: {str(r)[:160]}") from None
    finish = {"eos": "eos", "word": "stop", "limit": "length"}.get(stop_type, "length")
    # Logprobs and bytes come per token, in order; the server leaves out the tokens of a stop
    # word (and a token ending inside a UTF-8 character): match them up by id.
    lps: list[float | None] = [None] * len(ids)
    first_top: _Top = []
    j = 0
    for entry in probs:
        if not isinstance(entry, dict):
            continue
        tid = entry.get("id")
        while j < len(ids) and ids[j] != tid:
            j += 1
        if j >= len(ids):
            break
        lps[j] = to_float(entry.get("logprob"))
        raw = entry.get("bytes")
        if isinstance(raw, list) and ids[j] not in pieces:
            pieces[ids[j]] = bytes(int(b) & 0xFF for b in raw)
        if j == 0:
            top = entry.get("top_logprobs") or []
            first_top = [
                (t.get("id"), str(t.get("token", "")), to_float(t.get("logprob")) or -1e30)
                for t in top
                if isinstance(t, dict)
            ]
        j += 1
    prompt_n = to_int(timings.get("prompt_n"))
    cached_n = to_int(timings.get("cache_n"))
    if prompt_n is None:
        prompt_n = max(0, (to_int(r.get("tokens_evaluated")) or 0) - (cached_n or 0))
    return Completion(
        ids=ids,
        text="",
        pieces=[],
        logprobs=[0.0 if lp is None else lp for lp in lps],
        finish=finish,
        prompt_n=prompt_n,
        cached_n=cached_n or 0,
        top=first_top,
    )


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
    ids, lps, top = _openai_tokens(choice.get("logprobs") or {})
    n_done = to_int(usage.get("completion_tokens")) or len(ids)
    finish, text = _openai_finish(choice, reason, text, n_done > len(ids), req)
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
    )
    return done, to_int(usage.get("completion_tokens")) or 0


def _openai_tokens(lp: Any) -> tuple[list[int], list[float], _Top]:
    """Token ids, their logprobs and the first position's top logprobs, from a choice's logprobs."""
    ids: list[int] = []
    lps: list[float] = []
    top: _Top = []
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
        for k, (tok, value) in enumerate(zip(lp["tokens"], lp.get("token_logprobs") or [], strict=False)):
            tid = _token_id(tok)
            if tid is None:
                ids = []
                break
            ids.append(tid)
            lps.append(to_float(value) or 0.0)
            if k == 0 and lp.get("top_logprobs"):
                first = lp["top_logprobs"][0] or {}
                top = [(_token_id(t), str(t), to_float(v) or -1e30) for t, v in first.items()]
    return ids, lps, top


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
