"""Continuations on the real model: a node continued with forced text (budget forcing's "Wait",
with text cut from its end first), a revision's chat continuing its attempt's cells, and a model
whose template has a thinking block (a copy of the embedded model with a Qwen3-style template)."""

from __future__ import annotations

from comparing import compare

from engine.backends.llama_cpp.executor import LlamaCppExecutor
from engine.executor import GenDone
from engine.protocol import GenItem
from engine.sampling import SamplingParams
from engine.search.revisions import REVISE_PROMPT

MSGS = (("system", "You are terse."), ("user", "List three fruits."))


def _answer(ex: LlamaCppExecutor, run: str, items: list[GenItem]) -> GenDone:
    ex.generate(run, items)
    while True:
        for o in ex.poll():
            if isinstance(o, GenDone) and o.run_id == run:
                return o


def test_a_continuation_cuts_its_parents_end_and_decodes_the_prefix_on_the_same_cells(fresh):
    ex = LlamaCppExecutor(fresh)
    greedy = SamplingParams(temperature=0.0, max_tokens=12)
    (a,) = _answer(ex, "r", [GenItem(0, greedy, messages=MSGS)]).results
    cut = a.text[-5:]
    done = _answer(
        ex,
        "r",
        [GenItem(1, SamplingParams(temperature=0.0, max_tokens=6), parent=0, cut=cut, prefix=" Wait")],
    )
    child = ex._runs["r"].nodes[1]
    parent = ex._runs["r"].nodes[0]
    before = fresh.detokenize(child.tokens[: child.gen_start])
    assert before.endswith(a.text[: -len(cut)] + " Wait")  # cut, then the forced text
    assert fresh.detokenize(parent.tokens).endswith(a.text)  # the parent is untouched
    assert done.cached_tokens > 0 and done.prompt_tokens > 0  # its cells reused, the rest decoded
    # The same tokens decoded from scratch continue the same way: the shared cells are right.
    root = fresh.root(child.tokens[: child.gen_start])
    (again,) = fresh.fork(root, 1, SamplingParams(temperature=0.0, max_tokens=6))
    fresh.generate([again])
    assert again.text == done.results[0].text
    ex.finish()


def test_a_revision_chat_continues_its_attempt_and_decodes_only_the_rest(fresh):
    ex = LlamaCppExecutor(fresh)
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    (a,) = _answer(ex, "r", [GenItem(0, greedy, messages=MSGS)]).results
    nxt = (*MSGS, ("assistant", a.text), ("user", REVISE_PROMPT))
    done = _answer(ex, "r", [GenItem(1, greedy, parent=0, messages=nxt)])
    child = ex._runs["r"].nodes[1]
    full = fresh.chat_tokens([{"role": r, "content": t} for r, t in nxt])
    text = fresh.detokenize(child.tokens[: child.gen_start])
    assert text == fresh.detokenize(full)  # the same chat prompt...
    first = len(fresh.chat_tokens([{"role": r, "content": t} for r, t in MSGS]))
    # ...but the question and the attempt come from the attempt's cells; only the rest is decoded.
    assert done.cached_tokens >= first + a.n_tokens - 1  # (less an end token it had sampled)
    # The whole chat counts as the revision's prompt; the part its attempt's cells held as reused.
    assert done.prompt_tokens == child.gen_start and done.cached_tokens < done.prompt_tokens
    ex.finish()


def test_revisions_reuse_keeps_texts_reproducible_and_within_the_sequence_bound(fresh):
    from engine.search import budget_params, sequences_needed

    runs = [
        compare(fresh, "What is 7 + 8?", ["revisions"], budget=4, prm="arithmetic", max_tokens=24, seed=3)
        for _ in range(2)
    ]
    texts = [[n.text for n in r[0].trace().nodes.values()] for r in runs]
    assert texts[0] == texts[1] and len(texts[0]) == 4
    assert runs[0][0].cached_tokens > 0  # later attempts continued earlier ones
    assert sequences_needed("revisions", budget_params("revisions", 4)) == 3


THINKING_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}"
    "{% else %}{{ '<think>\\n' }}{% endif %}{% endif %}"
)


def test_budget_forcing_on_a_model_with_a_thinking_block_closes_it_at_the_token_budget(model_path, tmp_path):
    from small_models import drop_layers

    from engine.backends.llama_cpp import Backend, BackendConfig

    path = drop_layers(
        model_path,
        tmp_path / "thinking.gguf",
        keep=30,
        metadata={"tokenizer.chat_template": THINKING_TEMPLATE},
    )
    with Backend(path, BackendConfig(n_ctx=4096, n_seq_max=8)) as b:
        (run,) = compare(
            b, "What is 5 + 9?", ["budget_forcing"], budget=4, prm="arithmetic", max_tokens=40,
            overrides={"budget_forcing": {"think_tokens": 60, "answer_tokens": 16}},
        )  # fmt: skip
        # The template's own switch, honoured: thinking off renders an empty block, and EOS ends.
        msgs = [{"role": "user", "content": "hi"}]
        assert b.render_chat(msgs, enable_thinking=False).endswith("<think>\n\n</think>\n\n")
        (off,) = compare(
            b, "What is 5 + 9?", ["budget_forcing"], budget=2, prm="arithmetic", max_tokens=40,
            overrides={"budget_forcing": {"thinking": "off", "answer_tokens": 16}},
        )  # fmt: skip
    assert off.status == "done", off.message
    t_off = off.trace()
    assert t_off.started.params["thinking_block"] is False and t_off.started.params["thinking"] == "off"
    assert all("</think>" not in n.text for n in t_off.nodes.values())
    assert run.status == "done", run.message
    t = run.trace()
    assert t.started.params["thinking_block"] is True
    nodes = [t.nodes[i] for i in t.path_to(t.selected.node_id)]
    thinking = [n for n in nodes if n.role != "answer"]
    assert sum(n.n_tokens for n in thinking) <= 60  # the thinking budget, counted in tokens
    last = nodes[-1]
    if last.role == "answer":  # forced at the budget: the thinking closed, then the answer
        assert last.text.startswith("\n</think>\n\n") and last.n_tokens <= 16
    for n in nodes[1:]:
        if n.role == "continuation" and n.text.startswith("Wait"):
            assert "</think>" not in n.text[:10]
