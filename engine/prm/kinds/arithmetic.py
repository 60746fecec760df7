"""``--prm arithmetic``: every ``a op b = c`` claim of a step re-computed exactly; no model."""

from __future__ import annotations

from engine.executor import PRM
from engine.prm.arithmetic import ArithmeticPRM
from engine.prm.registry import PRMKind, register


def _build(host: object, spec: str, reference: str | None) -> PRM:
    return ArithmeticPRM()


register(
    PRMKind(
        name="arithmetic",
        label="arithmetic",
        summary="re-computes every a op b = c claim of a step exactly (no model)",
        in_process=_build,
        on_server=_build,
        runs_model=False,
        time_share=0.0,
        listed=True,
        order=20,
    )
)
