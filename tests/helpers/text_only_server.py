"""An OpenAI-compatible completions server of a few lines, as the Python ones built on pydantic are:
FastAPI validates ``prompt`` as a string or a list of strings, so a prompt of token ids is refused
with 422 and pydantic's body (``--refuse 400|500`` answers the same validation error with that status,
as some servers' error handlers do; ``--broken`` answers every completion with a bare HTTP 500;
``--token-ids`` takes token ids too, for comparing). Backed by the embedded model through
llama-cpp-python, one request at a time, each from a cleared cache with its own seed: an answer
depends only on its prompt's tokens and parameters. Answers in the legacy completions format, token
*texts* and their logprobs (no ids, no extensions); ``GET /stats`` says the tokens it generated.

    python tests/helpers/text_only_server.py MODEL.gguf --port P [--refuse 422] [--token-ids] [--threads T]
"""

from __future__ import annotations

import argparse
import threading

import llama_cpp
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel


class Body(BaseModel):
    model: str = ""
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    stop: str | list[str] | None = None
    logprobs: int | None = None


class IdsBody(Body):
    prompt: str | list[str] | list[int]  # type: ignore[assignment]


def make_app(model: str, refuse: int, token_ids: bool, broken: bool, threads: int = 2) -> FastAPI:
    llm = llama_cpp.Llama(model, n_ctx=4096, n_threads=threads, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    name = model.rsplit("/", 1)[-1]
    lock = threading.Lock()
    counts: list[list] = []  # each answer's tokens, the most it was allowed, why it ended
    stats = {"completion_tokens": 0, "requests": 0, "answers": counts}
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def refused(_req: Request, e: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": list(e.errors())}, status_code=refuse)

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "text-only"}]}

    @app.get("/stats")
    def said() -> dict:
        return stats

    @app.middleware("http")
    async def fail(req: Request, call_next):  # noqa: ANN001, ANN202 - FastAPI's middleware signature
        if broken and req.url.path == "/v1/completions":
            return JSONResponse("Internal Server Error", status_code=500)
        return await call_next(req)

    def complete(b: Body) -> dict:
        prompt = b.prompt[0] if isinstance(b.prompt, list) and isinstance(b.prompt[0], str) else b.prompt
        with lock:
            toks = (
                llm.tokenize(prompt.encode(), add_bos=True, special=True)
                if isinstance(prompt, str)
                else prompt
            )
            stops = [b.stop] if isinstance(b.stop, str) else list(b.stop or [])
            llm.reset()
            llm.set_seed(b.seed)
            out: list[int] = []
            lps: list[float] = []
            finish, text = "length", ""
            for t in llm.generate(
                list(toks),
                top_k=b.top_k,
                top_p=b.top_p,
                min_p=b.min_p,
                temp=b.temperature,
                repeat_penalty=1.0,
                reset=True,
            ):
                if llama_cpp.llama_vocab_is_eog(vocab, t):
                    finish = "stop"
                    break
                row = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)
                )
                top = float(row.max())
                lps.append(float(row[t] - top - np.log(np.exp(row - top).sum())))
                out.append(t)
                text = llm.detokenize(out).decode("utf-8", errors="ignore")
                hit = [text.index(s) for s in stops if s in text]
                if hit:
                    finish, text = "stop", text[: min(hit)]  # the stop string left out, as OpenAI does
                    break
                if len(out) >= b.max_tokens:
                    break
            stats["completion_tokens"] += len(out)
            stats["requests"] += 1
            counts.append([len(out), b.max_tokens, finish])
        texts = [llm.detokenize([t]).decode("utf-8", errors="ignore") for t in out]
        lp = {"tokens": texts, "token_logprobs": lps} if b.logprobs else None
        choice = {"text": text, "index": 0, "finish_reason": finish, "logprobs": lp}
        usage = {
            "prompt_tokens": len(toks),
            "completion_tokens": len(out),
            "total_tokens": len(toks) + len(out),
        }
        return {"object": "text_completion", "model": name, "choices": [choice], "usage": usage}

    if token_ids:

        @app.post("/v1/completions")
        def complete_ids(b: IdsBody) -> dict:
            return complete(b)
    else:

        @app.post("/v1/completions")
        def complete_text(b: Body) -> dict:
            return complete(b)

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--refuse", type=int, default=422, help="the status a validation error is answered with")
    ap.add_argument("--token-ids", action="store_true", help="take prompts of token ids too")
    ap.add_argument("--broken", action="store_true", help="answer every completion with a bare HTTP 500")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    app = make_app(a.model, a.refuse, a.token_ids, a.broken, a.threads)
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
