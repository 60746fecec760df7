"""``--prm PATH``: a PRM GGUF that ``models/catalog.toml`` knows (its ``prm_format`` names a token
format, its entry the step tag and verdict tokens), loaded in process in a backend of its own. Over
servers the PRM is served instead (``ponder serve PRM.gguf``) and named by its format."""

from __future__ import annotations

from pathlib import Path

from engine.errors import InvalidRequestError, PonderError
from engine.executor import PRM
from engine.models import load_catalog
from engine.prm import registry
from engine.prm.formats import VerdictFormat
from engine.prm.registry import InProcessHost, PRMKind, Where, register


def _token_formats() -> str:
    return ", ".join(registry.formats(VerdictFormat))


def _check(spec: str, where: Where) -> None:
    listed = [k.name for k in registry.listed()]
    if where.servers:
        model_readers = " | ".join(k.name for k in registry.listed() if k.runs_model and k.on_server)
        raise InvalidRequestError(
            f"With --server the PRM runs on a server too: serve {spec} (ponder serve {spec} --port 8081) "
            f"and give --prm-server http://127.0.0.1:8081 --prm {'|'.join(registry.formats(VerdictFormat))} "
            f"(or --prm {model_readers})."
        )
    path = Path(spec).expanduser()
    if where.must_exist and not path.exists():
        raise InvalidRequestError(
            f"--prm must be {', '.join(listed)} or an existing GGUF file; got {spec!r}."
        )
    if path.suffix.lower() != ".gguf" and not path.exists():
        raise InvalidRequestError(
            f"--prm must be one of {', '.join(listed)}, a token-PRM format served with "
            f"--prm-server ({_token_formats()}) or a PRM GGUF file; got {spec!r}."
        )


def _in_process(host: InProcessHost, spec: str, reference: str | None) -> PRM:
    path = Path(spec).expanduser()
    entry = next((c for c in load_catalog() if c.matches(path)), None)
    if entry is None or not entry.prm_format:
        raise PonderError(
            f"{path.name} is not a PRM that models/catalog.toml knows: add an entry with its "
            f"prm_format ({' or '.join(registry.formats(VerdictFormat))}) and tokens."
        )
    fmt = registry.verdict_format(entry.prm_format)
    return host.token_prm(path, fmt.with_settings(entry.settings), entry.id)


register(
    PRMKind(
        name="gguf",
        label="PRM GGUF",
        summary="a PRM GGUF file in process (its format and tokens from models/catalog.toml)",
        in_process=_in_process,
        check=_check,
        takes=lambda spec: True,  # any spec no kind names: a path, checked by _check
        order=1000,
    )
)
