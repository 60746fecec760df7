"""What the token-PRM formats share: where they run (a PRM server; in process through a PRM GGUF
file, ``gguf_file.py``) and how a served one finds its tokens in the catalog."""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import InvalidRequestError
from engine.executor import PRM
from engine.models import load_catalog
from engine.prm.formats import VerdictFormat
from engine.prm.registry import PRMKind, ServerHost, Where


def _check(spec: str, where: Where) -> None:
    if not where.prm_server:
        raise InvalidRequestError(
            f"--prm {spec} is a token PRM on a server: give --prm-server URL (ponder serve PRM.gguf "
            "starts one), or in process the PRM's GGUF file."
        )


def _on_server(fmt: VerdictFormat) -> Callable[[ServerHost, str, str | None], PRM]:
    def build(host: ServerHost, spec: str, reference: str | None) -> PRM:
        # The served model's catalog entry (by its file or served name) gives its tag and tokens.
        entry = next(
            (c for c in load_catalog() if c.prm_format == fmt.name and c.matches(host.prm_model)), None
        )
        if entry is None:
            return host.verdict_prm(fmt, spec)
        return host.verdict_prm(fmt.with_settings(entry.settings), entry.id)

    return build


def token_kind(fmt: VerdictFormat, summary: str, order: int) -> PRMKind:
    """The kind of a token-PRM format: ``--prm NAME --prm-server URL``."""
    return PRMKind(
        name=fmt.name,
        label=fmt.name,
        summary=summary,
        on_server=_on_server(fmt),
        check=_check,
        format=fmt,
        order=order,
    )
