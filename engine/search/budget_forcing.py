"""Budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling"): sequential scaling of one
chain of thought.

Each chain thinks until its budget is spent. While it tries to end early — EOS, or for templates
with a thinking block (Qwen3, DeepSeek-R1 distills: ``<think>…</think>``) the end of that block —
the end is suppressed and ``wait`` ("Wait") is appended, and it goes on. At the budget the thinking
is closed and the answer forced: ``answer_prompt`` ("Final Answer:") is appended on a model without
a thinking block, ``</think>`` on one with it, and the chain writes its answer (at most
``answer_tokens``).

Two budgets, whichever ends first: ``segments`` — the generations a chain may make while thinking
(its first, and one more for every forced continuation; a generation budget of B is ``chains`` x
``segments`` = B) — and ``think_tokens`` — thinking tokens per chain (a token budget; 0: only
segments count, each generation up to the run's max tokens). A chain that stops for length with
segments left simply goes on. Every segment is a node (the first a solution, then continuations,
then the forced answer). When every chain has ended the PRM scores each chain's text once; step
scores are causal, so each node gets the scores of the steps up to its end. The answer:
``selection`` over the chains' final texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from engine.answers import extract_answer
from engine.prm import aggregate, split_steps
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import Scored, added, choose, finished_event, score, scored_event, started
from engine.search.registry import BudgetError, Param, Strategy, multiple_of, register, selection_param

THINK_END = "</think>"
_LEADING_NUMBER = re.compile(r"\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)(?![\w^])")


@dataclass
class Chain:
    node_id: int | None = None
    text: str = ""  # what the model now holds after the prompt (cut and forced text included)
    used: int = 0  # thinking tokens generated
    segments: int = 0  # thinking generations made
    phase: str = "think"  # think | answer | done
    reason: str = "stop"
    score: float = 0.0
    answer_text: str = ""  # the answer written after the thinking closed (or was closed), if any
    marks: list[tuple[int, int]] = field(default_factory=list)  # (node, length of text at its end)
    cut: str = ""  # for its next generation: text to cut from its end ...
    prefix: str = ""  # ... and text to force after it


def _after(text: str, forced: str) -> str:
    """``forced`` as it follows ``text``: on a new paragraph unless the text ends in white space."""
    return forced if not text or text[-1].isspace() else "\n\n" + forced


def _plan(
    ch: Chain, g: Generated, thinking: bool, segments: int, think_tokens: int, wait: str, answer_prompt: str
) -> tuple[str, str, str]:
    """After a thinking generation: (what next, cut, prefix). next: think (go on), answer (the end
    is accepted or forced: write the answer) or done."""
    tried_to_end = g.finish_reason == "eos" or (
        thinking and g.finish_reason == "stop" and g.text.endswith(THINK_END)
    )
    budget_left = ch.segments < segments and (think_tokens <= 0 or ch.used < think_tokens)
    if tried_to_end:
        if budget_left:  # suppress the end: "Wait", and go on thinking
            cut = THINK_END if thinking and g.finish_reason == "stop" else ""
            return "think", cut, _after(ch.text[: len(ch.text) - len(cut)], wait)
        if thinking and g.finish_reason == "stop":  # it closed its thinking itself: now the answer
            return "answer", "", "\n\n"
        return "done", "", ""
    if g.finish_reason in ("length", "stop") and budget_left:  # cut short with budget left: go on
        return "think", "", ""
    if g.finish_reason == "cancelled":
        return "done", "", ""
    # The budget is spent: close the thinking and force the answer.
    if thinking:
        return "answer", "", "\n" + THINK_END + "\n\n"
    return "answer", "", _after(ch.text, answer_prompt)


def budget_forcing(
    ctx: RunContext,
    chains: int = 1,
    segments: int = 4,
    think_tokens: int = 0,
    wait: str = "Wait",
    answer_prompt: str = "Final Answer:",
    answer_tokens: int = 256,
    selection: str = "weighted",
    thinking: str = "on",
) -> StrategyGen:
    has_block = ctx.thinking
    # "off" asks the template for no thinking (its enable_thinking switch): EOS is then the end.
    switch = (("enable_thinking", False),) if has_block and thinking == "off" else ()
    thinking_on = has_block and thinking != "off"
    yield started(
        ctx,
        "budget_forcing",
        {
            "chains": chains,
            "segments": segments,
            "think_tokens": think_tokens,
            "wait": wait,
            "answer_prompt": answer_prompt,
            "answer_tokens": answer_tokens,
            "thinking_block": thinking_on,
            "thinking": thinking,
            "selection": selection,
        },
    )
    stop = (THINK_END,) if thinking_on else ()
    chs = [Chain() for _ in range(chains)]
    msgs = ctx.question_messages()
    while True:
        live = [k for k, c in enumerate(chs) if c.phase != "done"]
        if not live:
            break
        items = []
        for k in live:
            c = chs[k]
            nid = ctx.new_node()
            if c.phase == "answer":
                params = ctx.sampling(nid, answer_tokens, stop=False)
            else:
                room = ctx.max_tokens if think_tokens <= 0 else min(ctx.max_tokens, think_tokens - c.used)
                params = ctx.sampling(nid, max(1, room), stop=False)
                if stop:
                    params = replace(params, stop=stop)
            if c.node_id is None:
                items.append(GenItem(nid, params, messages=msgs, template=switch))
            else:
                items.append(GenItem(nid, params, parent=c.node_id, prefix=c.prefix, cut=c.cut))
        res: list[Generated] = yield Generate(tuple(items))
        old = [chs[k].node_id for k in live if chs[k].node_id is not None]
        for k, item, g in zip(live, items, res, strict=True):
            c = chs[k]
            role = (
                "answer" if c.phase == "answer" else ("continuation" if c.node_id is not None else "solution")
            )
            yield added(ctx, _shown(g, item.prefix), c.node_id, role)
            if item.cut and c.text.endswith(item.cut):
                c.text = c.text[: len(c.text) - len(item.cut)]
                c.marks = [(i, min(m, len(c.text))) for i, m in c.marks]
            c.text += item.prefix + g.text
            c.marks.append((g.node_id, len(c.text)))
            c.node_id, c.reason = g.node_id, g.finish_reason
            if c.phase == "answer":
                c.phase = "done"
                c.answer_text = g.text
            else:
                c.used += g.n_tokens
                c.segments += 1
                c.phase, c.cut, c.prefix = _plan(
                    c, g, thinking_on, segments, think_tokens, wait, answer_prompt
                )
        if old:
            yield Release(tuple(i for i in old if i is not None))
    # One PRM pass over every chain's whole text. Step scores are causal (step i is judged on the
    # steps up to it), so each node gets the scores of the steps up to its own end.
    scored = yield from score(ctx, [c.text for c in chs], [True] * len(chs))
    for c, sc in zip(chs, scored, strict=True):
        c.score = sc.score
        for node_id, mark in c.marks:
            n = len(split_steps(c.text[:mark], ctx.delimiter))
            steps = sc.steps[:n] or sc.steps[:1]
            yield scored_event(
                ctx, node_id, Scored(steps, aggregate(steps, ctx.aggregation) if steps else 0.0)
            )
        yield finished_event(ctx, c.node_id, _answer_source(c), c.reason)  # type: ignore[arg-type]  # grown
    yield Release(tuple(c.node_id for c in chs if c.node_id is not None))
    yield choose(
        ctx,
        [c.node_id for c in chs],  # type: ignore[misc]  # every chain has grown a node
        [_answer_source(c) for c in chs],
        [c.score for c in chs],
        selection,
    )


def _answer_source(c: Chain) -> str:
    """Where the chain's answer is read: the answer it wrote after its thinking (forced or not),
    when that gives one; else its whole text."""
    if c.answer_text and "\\boxed" not in c.answer_text:
        lead = _LEADING_NUMBER.match(c.answer_text)
        if lead:  # "Final Answer: 6 The answer to..." -> 6, whatever numbers follow
            return lead.group(1)
    if c.answer_text and extract_answer(c.answer_text) is not None:
        return c.answer_text
    return c.text


def _shown(g: Generated, prefix: str) -> Generated:
    """The generated node as the trace shows it: the forced prefix first (probability 1)."""
    if not prefix:
        return g
    return replace(
        g, text=prefix + g.text, logprobs=(0.0, *g.logprobs), pieces=(prefix, *g.pieces) if g.pieces else ()
    )


def _for_budget(budget: int, user: dict) -> dict:
    chains = int(user.get("chains") or 1)
    segments = multiple_of("Budget forcing", budget, chains, f"it runs {chains} chains of equal length")
    return {"chains": chains, "segments": segments}


def _for_tokens(tokens: int, per: int, user: dict) -> dict:
    chains = int(user.get("chains") or 1)
    if tokens < chains:
        raise BudgetError(f"Budget forcing with {chains} chains needs a token budget of at least {chains}.")
    per_chain = tokens // chains
    answer = max(1, min(int(user.get("answer_tokens", 256)), per_chain // 4))  # kept for the answer
    think = max(1, per_chain - answer)
    # At most one segment per thinking token: only the tokens bound the thinking.
    return {"chains": chains, "think_tokens": think, "segments": think, "answer_tokens": answer}


register(
    Strategy(
        name="budget_forcing",
        label="Budget forcing",
        summary='One chain made to think to its budget: an early end becomes "Wait" (s1, 2025)',
        shown=("chains", "segments", "think_tokens"),
        run=budget_forcing,
        for_budget=_for_budget,
        for_tokens=_for_tokens,
        cost=lambda p: int(p["chains"]) * int(p["segments"]),
        sequences=lambda p: 2 * int(p["chains"]) + 1,  # each chain's node and its continuation
        candidates=lambda p: int(p["chains"]),
        params=(
            Param(
                "chains", 1, "Chains", "Chains thinking in parallel; the budget is chains x segments", 1, 64
            ),
            Param(
                "think_tokens",
                0,
                "Thinking tokens",
                "Thinking tokens per chain before the answer is forced (0: segments only)",
                0,
                1_000_000,
                special="segments only",
            ),
            Param("wait", "Wait", "Continuation", "Text appended when the chain tries to stop early"),
            Param(
                "answer_prompt", "Final Answer:", "Answer prompt", "Text that forces the answer at the budget"
            ),
            Param("answer_tokens", 256, "Answer tokens", "The most tokens of the forced answer", 1, 4096),
            Param(
                "thinking",
                "on",
                "Thinking",
                "With a thinking template: think (on), or ask the template for none (off: its "
                "enable_thinking switch) so that EOS ends the chain",
                choices=("on", "off"),
            ),
            selection_param(),
        ),
        drawn_as="chain",
        answer_is_path=True,
        colour="#56B4E9",
        order=45,
    )
)
