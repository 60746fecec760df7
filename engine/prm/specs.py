"""Which PRM a ``--prm`` names: its check, the model-free PRMs, a token PRM's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError
from engine.prm.arithmetic import ArithmeticPRM
from engine.prm.reference import ReferencePRM

BUILTIN_PRMS = ("judge", "arithmetic", "reference")
PRM_FORMATS = ("math-shepherd", "rlhflow")
# PRMs with a classification head (llama.cpp cannot run it per step): served by vLLM's pooling API,
# which returns a class distribution at every step tag. Each: (its system prompt, its step tag), as
# its model card formats a solution (Qwen2.5-Math-PRM-7B/72B).
HEAD_PRM_FORMATS = {
    "qwen-prm": ("Please reason step by step, and put your final answer within \\boxed{}.", "<extra_0>"),
}


def check_prm_spec(
    spec: str, servers: bool = False, prm_server: bool = False, must_exist: bool = False
) -> None:
    """A PRM is a built-in scorer, a token-PRM format on a PRM server (``prm_server``), or a PRM
    GGUF file (in process only: with ``servers`` the PRM runs on a server too). ``must_exist``:
    the file must be there already (the CLI checks before anything loads)."""
    if spec in BUILTIN_PRMS:
        return
    if spec in HEAD_PRM_FORMATS and not prm_server:
        raise InvalidRequestError(
            f"--prm {spec} is a PRM with a classification head, served by vLLM (vllm serve "
            "Qwen/Qwen2.5-Math-PRM-7B): give --prm-server URL."
        )
    if spec in PRM_FORMATS or spec in HEAD_PRM_FORMATS:
        if not prm_server:
            raise InvalidRequestError(
                f"--prm {spec} is a token PRM on a server: give --prm-server URL (ponder serve PRM.gguf "
                "starts one), or in process the PRM's GGUF file."
            )
        return
    if servers:
        raise InvalidRequestError(
            f"With --server the PRM runs on a server too: serve {spec} (ponder serve {spec} --port 8081) "
            "and give --prm-server http://127.0.0.1:8081 --prm math-shepherd|rlhflow (or --prm judge)."
        )
    path = Path(spec).expanduser()
    if must_exist and not path.exists():
        raise InvalidRequestError(
            f"--prm must be judge, arithmetic, reference or an existing GGUF file; got {spec!r}."
        )
    if path.suffix.lower() != ".gguf" and not path.exists():
        raise InvalidRequestError(
            f"--prm must be one of {', '.join(BUILTIN_PRMS)}, a token-PRM format served with "
            f"--prm-server ({', '.join(PRM_FORMATS)}) or a PRM GGUF file; got {spec!r}."
        )


def model_free_prm(spec: str, reference: str | None) -> ArithmeticPRM | ReferencePRM | None:
    """The PRMs that need no model (arithmetic, reference), the same on every backend; else None."""
    if spec == "arithmetic":
        return ArithmeticPRM()
    if spec == "reference":
        return ReferencePRM(reference)
    return None


def token_prm_settings(entry: Any) -> dict[str, str]:
    """A token PRM's step tag and verdict tokens from its catalog entry (None: the defaults)."""
    settings = entry.settings if entry is not None else {}
    return {
        "step_tag": settings.get("step_tag", "ки"),
        "good_token": settings.get("good_token", "+"),
        "bad_token": settings.get("bad_token", "-"),
    }
