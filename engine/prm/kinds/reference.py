"""``--prm reference``: a finished candidate's final answer against the known answer (the pass@N
oracle); no model."""

from __future__ import annotations

from engine.executor import PRM
from engine.prm.reference import ReferencePRM
from engine.prm.registry import PRMKind, register


def _build(host: object, spec: str, reference: str | None) -> PRM:
    return ReferencePRM(reference)


register(
    PRMKind(
        name="reference",
        label="reference",
        summary="the final answer against the reference answer: the pass@N oracle (no model)",
        in_process=_build,
        on_server=_build,
        runs_model=False,
        needs_reference=True,
        time_share=0.0,
        listed=True,
        order=30,
    )
)
