"""The PRM kinds registry (engine/prm/registry.py, one module per kind in engine/prm/kinds/): what
``--prm`` accepts and refuses and where, what each executor is asked to build, the formats written
once for both backends, and a new kind added by one module. No model: hosts here record what a kind
asks of them (the real executors are tested on the embedded model in tests/integration/test_prm.py
and on real servers in tests/servers)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import InvalidRequestError, PonderError
from engine.prm import ArithmeticPRM, ReferencePRM, registry
from engine.prm.formats import Chat, HeadFormat, Tag, Text, VerdictFormat, render
from engine.prm.registry import PRMKind, Where

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Made:
    """A PRM a host built: what it was asked for."""

    how: str
    fmt: VerdictFormat | HeadFormat | None = None
    name: str | None = None
    path: Path | None = None
    mode: str = "direct"
    tokens_used: int = 0
    n_params: int = 7
    model_record: dict | None = None

    def score(self, question: str, candidates: Sequence[Sequence[str]], finished=None, cancel=None):
        return [[0.5] * len(c) for c in candidates]


@dataclass
class InProcess:
    calls: list[Made] = field(default_factory=list)

    def judge(self) -> Made:
        self.calls.append(Made("judge"))
        return self.calls[-1]

    def token_prm(self, path: Path, fmt: VerdictFormat, name: str) -> Made:
        self.calls.append(Made("token", fmt, name, path))
        return self.calls[-1]


@dataclass
class Served:
    model: str = "served-model.gguf"
    calls: list[Made] = field(default_factory=list)

    @property
    def prm_model(self) -> Path:
        return Path(self.model)

    def verdict_prm(self, fmt: VerdictFormat, name: str) -> Made:
        self.calls.append(Made("verdict", fmt, name))
        return self.calls[-1]

    def head_prm(self, fmt: HeadFormat, name: str | None = None) -> Made:
        self.calls.append(Made("head", fmt, name))
        return self.calls[-1]


def build_in_process(spec: str, reference: str | None = None) -> tuple[object, InProcess]:
    host = InProcess()
    return registry.check(spec).build_in_process(host, spec, reference), host


def build_on_server(spec: str, model: str = "served-model.gguf", pools_only: bool = False, prm_server=True):
    host = Served(model)
    kind = registry.resolve(spec, Where(servers=True, prm_server=prm_server), pools_only=pools_only)
    return kind.build_on_server(host, spec, None), host


def test_the_kinds_in_order_and_what_the_app_lists():
    assert registry.names() == ["judge", "arithmetic", "reference", "math-shepherd", "rlhflow", "qwen-prm"]
    assert [k.name for k in registry.listed()] == ["judge", "arithmetic", "reference"]
    assert registry.formats() == ["math-shepherd", "rlhflow"]
    assert registry.formats(HeadFormat) == ["qwen-prm"]
    assert registry.default_name() == "judge"
    assert registry.head_kind().name == "qwen-prm"
    assert all(k.summary and k.label for k in registry.kinds())


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        (
            "oracle",
            Where(),
            r"--prm must be one of judge, arithmetic, reference, a token-PRM format .*"
            r"\(math-shepherd, rlhflow\) or a PRM GGUF file; got 'oracle'",
        ),
        (
            "nope.gguf",
            Where(must_exist=True),
            "--prm must be judge, arithmetic, reference or an existing GGUF",
        ),
        ("math-shepherd", Where(), "is a token PRM on a server: give --prm-server URL"),
        ("rlhflow", Where(servers=True), "is a token PRM on a server: give --prm-server URL"),
        ("qwen-prm", Where(servers=True), "classification head, served by vLLM"),
        (
            "prm.gguf",
            Where(servers=True),
            r"--prm-server http://127.0.0.1:8081 --prm math-shepherd\|rlhflow "
            r"\(or --prm judge\)",
        ),
    ],
)
def test_a_spec_refused_where_it_cannot_run(spec, where, message):
    with pytest.raises(InvalidRequestError, match=message):
        registry.check(spec, where)


@pytest.mark.parametrize("spec", ["judge", "arithmetic", "reference"])
def test_the_builtins_run_everywhere(spec):
    for where in (Where(), Where(servers=True), Where(servers=True, prm_server=True)):
        assert registry.check(spec, where).name == spec


def test_in_process_each_kind_asks_its_executor_for_its_mechanism(tmp_path):
    prm, host = build_in_process("judge")
    assert host.calls == [prm] and prm.how == "judge"
    assert isinstance(build_in_process("arithmetic")[0], ArithmeticPRM)
    ref, host = build_in_process("reference", "42")
    assert isinstance(ref, ReferencePRM) and ref.reference == "42" and host.calls == []
    # A PRM GGUF the catalog knows: its format, with the entry's own tag and tokens, and its id.
    path = tmp_path / "math-shepherd-mistral-7b-prm.Q4_K_M.gguf"
    prm, host = build_in_process(str(path))
    assert prm.how == "token" and prm.path == path and prm.name == "math-shepherd-mistral-7b-prm"
    assert prm.fmt.name == "math-shepherd" and prm.fmt.step_tag == "ки" and prm.fmt.good == ("+",)
    prm, _ = build_in_process(str(tmp_path / "Llama3.1-8B-PRM-Deepseek-Data.Q4_K_M.gguf"))
    assert prm.fmt.name == "rlhflow" and prm.fmt.step_tag is None
    with pytest.raises(
        PonderError, match="is not a PRM that models/catalog.toml knows.*math-shepherd or rlhflow"
    ):
        build_in_process(str(tmp_path / "some-policy.gguf"))


def test_on_a_server_each_kind_asks_for_a_verdict_or_a_head():
    prm, host = build_on_server("judge")
    assert prm.how == "verdict" and prm.fmt.name == "judge" and prm.fmt.spellings and not prm.fmt.special
    # A token format: the served model's catalog entry names the PRM and gives its tokens...
    prm, _ = build_on_server("math-shepherd", model="/models/math-shepherd-mistral-7b-prm.Q4_0.gguf")
    assert prm.name == "math-shepherd-mistral-7b-prm" and prm.fmt.step_tag == "ки"
    # ...and a model the catalog does not know goes by the format's name with its defaults.
    prm, _ = build_on_server("rlhflow", model="mystery")
    assert prm.how == "verdict" and prm.name == "rlhflow" and prm.fmt.good == ("+",)
    prm, _ = build_on_server("qwen-prm")
    assert prm.how == "head" and prm.fmt.step_tag == "<extra_0>"
    assert build_on_server("arithmetic")[1].calls == []


def test_a_prm_server_that_only_pools_serves_a_head_whatever_a_model_reading_spec_said():
    for spec in ("judge", "math-shepherd", "rlhflow"):
        prm, _ = build_on_server(spec, pools_only=True)
        assert prm.how == "head", spec
    assert isinstance(build_on_server("arithmetic", pools_only=True)[0], ArithmeticPRM)


def test_what_a_run_records_of_its_prm():
    prm, _ = build_on_server("judge")
    rec = registry.get("judge").record(prm, "judge")
    assert rec == {"name": "judge", "spec": "judge", "kind": "judge", "n_params": 7}
    rec = registry.get("arithmetic").record(ArithmeticPRM(), "arithmetic")
    assert rec["kind"] == "arithmetic" and rec["n_params"] == 0 and "model" not in rec


def test_the_cost_and_reference_rules_come_from_the_kind():
    assert registry.time_share("judge") == 0.5
    assert registry.time_share("arithmetic") == registry.time_share("reference") == 0.0
    assert registry.time_share("prm.gguf") == 0.3
    assert registry.needs_reference("reference") and not registry.needs_reference("judge")
    assert not registry.runs_model("arithmetic") and registry.runs_model("math-shepherd")


class Vocab:
    """Characters as tokens; BOS = 1; a chat rendered as 'role: text' lines and an assistant header."""

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return ([1] if add_special else []) + [ord(c) for c in text]

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + (
            "assistant:" if add_generation_prompt else ""
        )


def test_math_shepherd_prefixes_tag_every_step_and_extend_each_other():
    fmt = registry.verdict_format("math-shepherd")
    steps = ["First 2+2=4.\n\n", "So 4."]
    assert fmt.prefix("Q?", steps) == (
        Text("Q? ", add_special=True),
        Text("First 2+2=4."),
        Tag(),
        Text("So 4."),
        Tag(),
    )
    memo: dict = {}
    p1 = render(fmt.prefix("Q?", steps[:1]), Vocab(), 99, memo)
    p2 = render(fmt.prefix("Q?", steps), Vocab(), 99, memo)
    assert p1[0] == 1 and p1[-1] == 99 and p2[: len(p1)] == p1 and p2[-1] == 99
    with pytest.raises(ValueError, match="step tag"):
        render(fmt.prefix("Q?", steps), Vocab(), None, {})


def test_rlhflow_prefixes_are_a_chat_with_the_good_token_as_each_answer():
    fmt = registry.verdict_format("rlhflow").with_settings({"good_token": "good", "step_tag": "ignored"})
    (chat,) = fmt.prefix("Q?", ["a\n\n", "b"])
    assert isinstance(chat, Chat) and chat.messages == (
        ("user", "Q? a"),
        ("assistant", "good"),
        ("user", "b"),
    )
    assert fmt.step_tag is None  # a chat format has no tag to set
    p1 = render(fmt.prefix("Q?", ["a\n\n"]), Vocab(), None, {})
    p2 = render(fmt.prefix("Q?", ["a\n\n", "b"]), Vocab(), None, {})
    assert p2[: len(p1)] == p1


def test_the_judge_format_is_the_solvers_conversation_then_the_question():
    fmt = registry.get("judge").format
    (chat,) = fmt.prefix("What is 2+2?", ["2+2=4.\n\n", "So 4."])
    roles = [r for r, _ in chat.messages]
    assert roles == ["system", "user", "assistant", "user"] and chat.messages[2][1] == "2+2=4.\n\nSo 4."
    assert fmt.forms("yes") == ["yes", "Yes", " yes", " Yes", "YES"] and fmt.verdicts() == "yes/no"
    assert registry.verdict_format("math-shepherd").verdicts() == "'+'/'-'"


def test_a_head_format_tags_every_stripped_step():
    fmt = registry.get("qwen-prm").format
    msgs = fmt.messages("Q?", ["One.<extra_0>\n\n", " Two."])
    assert msgs[0]["role"] == "system" and msgs[2]["content"] == "One.<extra_0>Two.<extra_0>"


def test_an_unknown_format_is_refused_by_name():
    with pytest.raises(
        InvalidRequestError, match="Unknown PRM format 'shepherd-ish'; use one of math-shepherd"
    ):
        registry.verdict_format("shepherd-ish")
    with pytest.raises(InvalidRequestError, match="Unknown PRM format 'judge'"):
        registry.verdict_format("judge")  # the judge reads the policy, it is no PRM file's format


def test_a_new_kind_is_one_register_call():
    """What a plugin's module does: the CLI's check, the app's list and both executors follow."""
    kind = PRMKind(
        name="always-half",
        label="always ½",
        summary="every step 0.5 (a test kind)",
        in_process=lambda host, spec, ref: ArithmeticPRM(),
        on_server=lambda host, spec, ref: ArithmeticPRM(),
        runs_model=False,
        time_share=0.0,
        listed=True,
        order=25,
    )
    registry.register(kind)
    try:
        assert [k.name for k in registry.listed()] == ["judge", "arithmetic", "always-half", "reference"]
        assert registry.check("always-half", Where(servers=True)) is kind
        assert isinstance(build_in_process("always-half")[0], ArithmeticPRM)
        with pytest.raises(
            InvalidRequestError, match="must be one of judge, arithmetic, always-half, reference"
        ):
            registry.check("oracle")
    finally:
        registry.unregister("always-half")
    with pytest.raises(ValueError, match="runs nowhere"):
        registry.register(PRMKind(name="nowhere", label="x", summary="x"))
    with pytest.raises(ValueError, match="without '@'"):
        registry.register(
            PRMKind(name="a@b", label="x", summary="x", on_server=lambda h, s, r: ArithmeticPRM())
        )


def _quoted(name: str) -> re.Pattern[str]:
    return re.compile(rf"[\"']{re.escape(name)}[\"']")


def test_nothing_but_its_module_names_a_kind():
    """The acceptance of the registry: a kind's name is written in its own module (and the class it
    registers) only; the executors, the CLI and the app's lists ask the registry."""
    kinds_dir = ROOT / "engine" / "prm" / "kinds"
    own = {k.name: k for k in registry.kinds() if k.takes is None}
    # The implementation a kind registers may name itself as its default display name.
    implementations = {"judge": "judge.py", "arithmetic": "arithmetic.py", "reference": "reference.py"}
    # The same word for another concept: a catalog role (a model fit to judge), the reference answer.
    other_meaning = {
        ("gui/model_bar.py", "judge"),
        ("engine/cli/compare.py", "reference"),
        ("engine/store/transfer.py", "reference"),
    }
    offenders = []
    for path in sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "gui").rglob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        if path.parent == kinds_dir:
            continue
        text = path.read_text(encoding="utf-8")
        for name in own:
            if (rel, name) in other_meaning or rel == f"engine/prm/{implementations.get(name)}":
                continue
            for line in text.splitlines():
                if _quoted(name).search(line) and not line.lstrip().startswith("#"):
                    offenders.append(f"{rel}: {line.strip()}")
    assert offenders == []
