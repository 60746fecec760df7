"""Math-Shepherd's token-PRM format: ``question + " " + steps``, each step followed by the step tag
(``ки``); a step's score is P(good) over {good, bad} read at its tag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.prm.formats import Prompt, Segment, Tag, Text, VerdictFormat
from engine.prm.kinds._token import token_kind
from engine.prm.registry import register


@dataclass(frozen=True)
class MathShepherdFormat(VerdictFormat):
    def prefix(self, question: str, steps: Sequence[str]) -> Prompt:
        out: list[Segment] = [Text(question + " ", add_special=True)]
        for s in steps:
            out += [Text(s.strip()), Tag()]
        return tuple(out)


FORMAT = MathShepherdFormat("math-shepherd", good=("+",), bad=("-",), step_tag="ки")

register(token_kind(FORMAT, "a Math-Shepherd token PRM (P(+) at the step tag after each step)", order=40))
