"""``--prm judge``: the policy model (or a server's model) asked after each step whether the last step
is correct; the score is P(yes) / (P(yes) + P(no)) at the first token of its reply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.executor import PRM
from engine.prm.formats import Chat, Prompt, VerdictFormat
from engine.prm.judge import JUDGE_QUESTION
from engine.prm.registry import InProcessHost, PRMKind, ServerHost, register
from engine.protocol import SYSTEM_PROMPT


@dataclass(frozen=True)
class JudgeFormat(VerdictFormat):
    """The solver's conversation (its system prompt, the problem, the solution so far as the
    assistant's turn), then :data:`~engine.prm.judge.JUDGE_QUESTION` as the user's turn."""

    system_prompt: str = SYSTEM_PROMPT

    def prefix(self, question: str, steps: Sequence[str]) -> Prompt:
        return (
            Chat(
                (
                    ("system", self.system_prompt),
                    ("user", question),
                    ("assistant", "".join(steps)),
                    ("user", JUDGE_QUESTION),
                )
            ),
        )


FORMAT = JudgeFormat("judge", good=("yes",), bad=("no",), special=False, spellings=True)


def _in_process(host: InProcessHost, spec: str, reference: str | None) -> PRM:
    return host.judge()


def _on_server(host: ServerHost, spec: str, reference: str | None) -> PRM:
    return host.verdict_prm(FORMAT, "judge")


register(
    PRMKind(
        name="judge",
        label="judge",
        summary="the policy model judges each step (P(yes) to 'Is the last step correct?')",
        in_process=_in_process,
        on_server=_on_server,
        format=FORMAT,
        time_share=0.5,
        listed=True,
        default=True,
        order=10,
    )
)
