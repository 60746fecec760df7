"""The fuzz suite (see tests/helpers/fuzzing.py): 200 mutated GGUF headers, 200 random problem texts, 50
bit-flipped session databases, 50 malformed export files. Every case must end with a clear message
(exit 2, "ponder: error: ...") or a correct result — no traceback, no crash, no hang, no change to
the input file. The four groups run at once, each in its own process, seeded
(``PONDER_FUZZ_SEED`` picks another seed); the counts are printed at the end of the test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import fuzzing
import pytest

from engine import children

SEED = int(os.environ.get("PONDER_FUZZ_SEED", "20261201"))
COUNTS = {"gguf": 200, "problems": 200, "db": 50, "exports": 50}
WALL_LIMIT_S = 1200


@pytest.fixture(scope="module")
def results(tmp_path_factory, model_path):
    """Start every group at once; collect each group's JSON lines, return code and stderr."""
    from comparing import recorded_compare

    from engine.backends.llama_cpp import Backend, BackendConfig
    from engine.store import Store, export_text

    base = tmp_path_factory.mktemp("fuzz")
    # A real session database and its exports, to damage.
    with Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=16)) as b, Store.open(base / "good.db") as s:
        sid, _, _ = recorded_compare(
            b, s, "What is 2 + 3?", ["best_of_n", "beam_search"], budget=2, prm="arithmetic", max_tokens=16
        )
        (base / "good.json").write_text(export_text(s, sid, "json"), encoding="utf-8")
        (base / "good.jsonl").write_text(export_text(s, sid, "jsonl"), encoding="utf-8")
    from small_models import drop_layers

    small = drop_layers(model_path, base / "smollm2-2-blocks.gguf", 2)
    extra = {
        "problems": [str(small)],
        "db": [str(base / "good.db")],
        "exports": [str(base / "good.json"), str(base / "good.jsonl")],
    }
    script = Path(__file__).resolve().parents[1] / "helpers" / "fuzzing.py"
    procs = {}
    for group, n in COUNTS.items():
        work = base / group
        work.mkdir()
        procs[group] = children.start(
            [sys.executable, str(script), group, str(SEED), str(work), str(n), *extra.get(group, [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    out = {}
    deadline = time.monotonic() + WALL_LIMIT_S
    for group, p in procs.items():
        try:
            so, se = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
        rows, done = [], None
        for line in so.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if "done" in d:
                done = d
            else:
                rows.append(d)
        out[group] = {"rows": rows, "done": done, "code": p.returncode, "stderr": se[-3000:]}
    return out


def check_group(results, group: str) -> list[dict]:
    r = results[group]
    rows = r["rows"]
    if r["done"] is None or len(rows) != COUNTS[group]:
        last = rows[-1]["i"] if rows else -1
        pytest.fail(
            f"the {group} fuzzer stopped at case {last + 1} of {COUNTS[group]} (exit {r['code']}: a crash, a "
            f"hang or a traceback):\n{r['stderr']}"
        )
    bad = []
    for d in rows:
        if d["code"] not in (0, 2):
            bad.append(d)
        elif d["code"] == 2 and (
            "ponder: error:" not in d["stderr"]
            or "Traceback" in d["stderr"]
            or "internal error" in d["stderr"]
        ):
            bad.append(d)
        elif d.get("unchanged") is False:
            bad.append(d)
    assert not bad, "\n".join(
        f"case {d['i']} ({d['label']}): exit {d['code']}: {d['stderr'][-400:]}" for d in bad
    )
    outcomes = {"message": sum(d["code"] == 2 for d in rows), "result": sum(d["code"] == 0 for d in rows)}
    fuzzing.REPORT[group] = {**outcomes, "cases": len(rows), "seconds": r["done"]["seconds"]}
    return rows


def test_mutated_gguf_headers_are_refused_with_a_message_or_load_and_generate(results):
    rows = check_group(results, "gguf")
    ran = [d for d in rows if d["code"] == 0]
    # Both paths are exercised: damage our header check refuses, and damage only llama.cpp can judge.
    assert len(ran) >= 20 and len(rows) - len(ran) >= 50, (len(ran), len(rows))
    assert all(d["listed"] for d in rows)  # the model list shows every file, with its error if any


def test_random_problem_texts_are_refused_clearly_or_saved_exported_and_imported_as_given(results):
    rows = check_group(results, "problems")
    for d in rows:
        if d["code"] == 0:
            assert d["stored_ok"] and d["reimport_ok"], d
        if "cli_code" in d:
            assert d["cli_code"] in (0, 2) and "Traceback" not in d["cli_stderr"], d
            assert (d["cli_code"] == 0) == (d["code"] == 0), d  # the command line agrees with the engine
    kinds = {d["kind"] for d in rows if d["code"] == 0}
    assert {"controls", "scripts", "surrogates", "random"} <= kinds  # these run, and are kept as given
    assert all(d["code"] == 2 for d in rows if d["kind"] == "long" or d["blank"])


def test_bit_flipped_session_databases_are_reported_damaged_or_read(results):
    rows = check_group(results, "db")
    assert all(set(d["codes"]) <= {0, 2} for d in rows)
    assert sum(d["code"] == 2 for d in rows) >= 10  # flips in the schema and header are caught


def test_malformed_export_files_are_refused_whole_or_imported_whole(results):
    rows = check_group(results, "exports")
    for d in rows:
        if d["code"] == 0:
            assert d["show"] == 0 and d["html"] == 0, d  # what was imported can be shown and exported
