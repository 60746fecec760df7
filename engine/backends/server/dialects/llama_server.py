"""llama.cpp's llama-server, through its own ``/completion`` endpoint (the llama.cpp server README)
with ``cache_prompt``, ``return_tokens`` and ``n_probs``: prompts and continuations travel as token
ids, so a beam's child continues from exactly the tokens its parent produced, and every generated
token comes back with its id and bytes. Several completions of one prompt go as one request
(``n_cmpl``: the prompt decoded once and copied to the slots). Recognised by its ``/props``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from engine.backends.server.dialects.base import Body, Dialect, Endpoint, LogprobShape, Probe, register
from engine.backends.server.wire import (
    Completion,
    CompletionRequest,
    ServerError,
    ServerInfo,
    to_float,
    to_int,
)

_Top = list[tuple[int | None, str, float]]


def llama_body(req: CompletionRequest, model: str) -> Body:
    """The /completion request body: plain temperature sampling (every other sampler of
    llama-server's chain set to do nothing), token ids in and out, the prefix cache on."""
    body: Body = {
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


@dataclass(frozen=True)
class LlamaServer(Dialect):
    key: ClassVar[str] = "llama-server"
    name: ClassVar[str] = "llama-server"
    order: ClassVar[int] = 10
    several_per_request: ClassVar[bool] = True
    logprobs: ClassVar[LogprobShape] = "per-token"
    verdict_top: ClassVar[int] = 100
    says_slots: ClassVar[bool] = True
    metrics_path: ClassVar[str | None] = "/metrics"  # (when started with --metrics)
    renders_chats: ClassVar[bool] = True
    health_path: ClassVar[str] = "/health"

    @classmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        props = probe.props
        if isinstance(props, dict) and ("total_slots" in props or "build_info" in props):
            return cls()
        return None

    async def describe(self, probe: Probe) -> ServerInfo:
        props = probe.props or {}
        gen = props.get("default_generation_settings") or {}
        meta = probe.meta
        return ServerInfo(
            url=probe.client.url,
            dialect=self.name,
            model=probe.model,
            models=probe.models,
            slots=probe.client.parallel or int(props.get("total_slots") or 1),
            n_ctx=to_int(gen.get("n_ctx")) or to_int(meta.get("n_ctx")),
            n_params=to_int(meta.get("n_params")),
            n_vocab=to_int(meta.get("n_vocab")),
            build=str(props.get("build_info") or ""),
            model_path=str(props.get("model_path") or ""),
            chat_template=props.get("chat_template") or None,
            bos_token=str(props.get("bos_token") or ""),
            eos_token=str(props.get("eos_token") or ""),
            owned_by=str(probe.entry.get("owned_by") or "llamacpp"),
            server_slots=to_int(props.get("total_slots")),
        )

    def request(self, req: CompletionRequest, model: str, prompt_text: str | None = None) -> tuple[str, Body]:
        return "/completion", llama_body(req, model)

    async def complete(self, client: Endpoint, req: CompletionRequest) -> list[Completion]:
        """``req.n`` completions of one prompt (the server decodes the prompt once and copies it to
        ``n`` slots; completion ``i`` samples with seed ``seed + i``)."""
        path, body = self.request(req, client.info.model if client.info else "")
        r = await client.call("POST", path, body)
        results = r if isinstance(r, list) else [r]
        if len(results) != req.n or not all(isinstance(x, dict) for x in results):
            raise ServerError(client.url, f"answered {len(results)} completions for {req.n} asked")
        out = []
        for x in sorted(results, key=lambda x: to_int(x.get("index")) or 0):
            done = parse_llama(client.url, x, client.pieces)
            done.text, done.pieces = await client.assemble(done.ids)
            out.append(done)
        return out

    def tokenize_body(self, text: str, add_special: bool, parse_special: bool, model: str) -> Body:
        return {
            "content": text,
            "add_special": add_special,
            "parse_special": parse_special,
            "with_pieces": False,
        }

    def detokenize_body(self, token: int, model: str) -> Body:
        return {"tokens": [token]}

    def detokenized(self, body: Any) -> str:
        return str(body.get("content", "")) if isinstance(body, dict) else ""


register(LlamaServer)
