"""RLHFlow's token-PRM format: a chat whose first user turn is ``question + " " + step1``, each later
user turn one step, each assistant turn the good token; a step's score is P(good) over {good, bad}
where the assistant answers it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.prm.formats import Chat, Prompt, VerdictFormat
from engine.prm.kinds._token import token_kind
from engine.prm.registry import register


@dataclass(frozen=True)
class RLHFlowFormat(VerdictFormat):
    def prefix(self, question: str, steps: Sequence[str]) -> Prompt:
        msgs: list[tuple[str, str]] = []
        for i, s in enumerate(steps):
            if i:
                msgs.append(("assistant", self.good[0]))
            msgs.append(("user", (question + " " + s.strip()) if i == 0 else s.strip()))
        return (Chat(tuple(msgs)),)


FORMAT = RLHFlowFormat("rlhflow", good=("+",), bad=("-",))

register(token_kind(FORMAT, "an RLHFlow token PRM (P(+) as the assistant's answer to each step)", order=50))
