"""What a server is, asked before anything runs: its models (any server's ``/v1/models``), the one
chosen, and the dialect it speaks, with its slots, context and build. The registered dialects are
asked in their probe order (:func:`~engine.backends.server.dialects.base.probe_order`) whether
they recognise the server, over one :class:`~engine.backends.server.dialects.base.Probe` that asks
each question of the server at most once (llama-server's ``/props`` first of all); the first that
does describes it. ``client`` is a :class:`~engine.backends.server.client.ServerClient` (its
``call``, ``url`` and ``parallel``), which this module does not import: the client imports it."""

from __future__ import annotations

from engine.backends.server.dialects.base import DEFAULT_SLOTS, Caller, Dialect, Probe, probe_order
from engine.backends.server.wire import ServerError, ServerInfo

__all__ = ["DEFAULT_SLOTS", "probe_server"]


async def probe_server(client: Caller, model: str | None = None) -> tuple[ServerInfo, Dialect]:
    """Ask the server what it serves; pick ``model`` among its models (the only one if None); and
    which dialect it speaks, with what it can do."""
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
    probe = Probe(client, chosen, ids, entry, props if isinstance(props, dict) else None)
    for kind in probe_order():
        dialect = await kind.recognise(probe)
        if dialect is not None:
            return await dialect.describe(probe), dialect
    raise ServerError(client.url, "speaks no dialect Ponder knows")
