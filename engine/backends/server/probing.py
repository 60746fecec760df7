"""What a server is, asked before anything runs: its dialect, models, slots, context and build
(llama-server's ``/props``, any server's ``/v1/models``), and what an OpenAI-compatible endpoint can
do beyond the API: tokenize (vLLM and SGLang have ``/tokenize``; a gateway or a proxy has none),
take a prompt as token ids (the SGLang Model Gateway takes text only), generate at all (a reward
model on vLLM only pools), and which model its answers name (a gateway lists ``unknown``).
``client`` is a :class:`~engine.backends.server.client.ServerClient` (its ``call``, ``url`` and
``parallel``), which this module does not import: the client imports it."""

from __future__ import annotations

from typing import Any

from engine.backends.server.wire import ServerError, ServerInfo, to_int

DEFAULT_SLOTS = 16  # an OpenAI-compatible server that does not say (vLLM batches far more)


async def probe_server(client: Any, model: str | None = None) -> ServerInfo:
    """Ask the server what it serves; pick ``model`` among its models (the only one if None)."""
    props = None
    try:
        props = await client.call("GET", "/props", retries=1, timeout=30)
    except ServerError as e:
        if e.dead or "API key" in str(e):
            raise
    models_body = await client.call("GET", "/v1/models", retries=1, timeout=30)
    data = models_body.get("data") if isinstance(models_body, dict) else None
    if not isinstance(data, list):
        raise ServerError(client.url, "answered /v1/models without a model list")
    entries = [m for m in data if isinstance(m, dict) and m.get("id")]
    ids = [str(m["id"]) for m in entries]
    if not ids:
        raise ServerError(client.url, "serves no model")
    aliases: dict[str, str] = {}
    for m in entries:
        for a in m.get("aliases") or []:
            aliases[str(a)] = str(m["id"])
    if model is None:
        if len(ids) > 1:
            raise ServerError(client.url, f"serves several models; choose one with --model: {', '.join(ids)}")
        chosen = ids[0]
    elif model in ids:
        chosen = model
    elif model in aliases:
        chosen = aliases[model]
    else:
        raise ServerError(client.url, f"has no model {model!r}; it serves: {', '.join(ids)}")
    entry = next(m for m in entries if str(m["id"]) == chosen)
    meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
    is_llama = isinstance(props, dict) and ("total_slots" in props or "build_info" in props)
    if is_llama:
        assert isinstance(props, dict)
        gen = props.get("default_generation_settings") or {}
        info = ServerInfo(
            url=client.url,
            dialect="llama-server",
            model=chosen,
            models=ids,
            slots=client.parallel or int(props.get("total_slots") or 1),
            n_ctx=to_int(gen.get("n_ctx")) or to_int(meta.get("n_ctx")),
            n_params=to_int(meta.get("n_params")),
            n_vocab=to_int(meta.get("n_vocab")),
            build=str(props.get("build_info") or ""),
            model_path=str(props.get("model_path") or ""),
            chat_template=props.get("chat_template") or None,
            bos_token=str(props.get("bos_token") or ""),
            eos_token=str(props.get("eos_token") or ""),
            owned_by=str(entry.get("owned_by") or "llamacpp"),
            server_slots=to_int(props.get("total_slots")),
        )
    else:
        version = ""
        try:
            v = await client.call("GET", "/version", retries=0, timeout=10)
            version = str(v.get("version", "")) if isinstance(v, dict) else ""
        except ServerError:
            pass
        info = ServerInfo(
            url=client.url,
            dialect="openai",
            model=chosen,
            models=ids,
            slots=client.parallel or DEFAULT_SLOTS,
            n_ctx=to_int(entry.get("max_model_len")),
            build=(f"{entry.get('owned_by', '')} {version}").strip(),
            owned_by=str(entry.get("owned_by") or ""),
        )
        client.info = info
        await probe_openai(client, info)
    return info


async def probe_openai(client: Any, info: ServerInfo) -> None:
    """What an OpenAI-compatible endpoint can do beyond the API: tokenize (vLLM, SGLang: a
    ``/tokenize``; a gateway or a proxy: none), and take a prompt as token ids (a gateway takes
    text only). One tiny completion tells the second, and the model the answer names (a gateway
    lists its model as ``unknown``)."""
    try:
        body = await client.call(
            "POST",
            "/tokenize",
            {"model": info.model, "prompt": "a", "content": "a", "add_special_tokens": False},
            retries=0,
            timeout=30,
        )
        info.tokenizes = isinstance(body, dict) and isinstance(body.get("tokens"), list)
    except ServerError as e:
        if e.dead or "API key" in str(e):
            raise
        info.tokenizes = False
    tiny = {"model": info.model, "prompt": [0], "max_tokens": 1, "temperature": 0.0}
    try:
        r = await client.call("POST", "/v1/completions", tiny, retries=1, timeout=60)
    except ServerError as e:
        if e.dead or "API key" in str(e) or "HTTP 4" not in str(e):
            raise
        if "HTTP 404" in str(e) and await pools(client, info):
            info.pooling = True  # a reward model behind vLLM's pooling API: it generates nothing
            return
        info.text_prompts = True
        try:
            r = await client.call("POST", "/v1/completions", dict(tiny, prompt="Hi"), retries=1, timeout=60)
        except ServerError:
            return
    if isinstance(r, dict) and r.get("model") and str(r["model"]) != info.model:
        info.served_as = str(r["model"])


async def pools(client: Any, info: ServerInfo) -> bool:
    """Whether the endpoint answers vLLM's pooling API (``/pooling``), as a reward model does."""
    try:
        body = await client.call(
            "POST", "/pooling", {"model": info.model, "input": [0]}, retries=0, timeout=60
        )
    except ServerError as e:
        if e.dead:
            raise
        return False
    return isinstance(body, dict) and isinstance(body.get("data"), list)
