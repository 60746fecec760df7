"""Ponder processes on one machine take turns on the CPU (engine.cpu_share)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from engine import children

WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from engine.cpu_share import CpuTurn

    turn = CpuTurn(Path(sys.argv[1]))
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    spans = []
    while time.time() < start + 1.5:
        with turn():
            t0 = time.time()
            time.sleep(0.01)  # a "decode"
            spans.append((t0, time.time()))
        x = sum(i * i for i in range(2000))  # the Python work between decodes
    print(json.dumps({"spans": spans, "waited": turn.waited_s}))
    """
)


def test_two_processes_never_decode_at_once_and_take_turns_fairly(tmp_path):
    import time

    start = time.time() + 1.0
    procs = [
        children.start(
            [sys.executable, "-c", WORKER, str(tmp_path), str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    a, b = (o["spans"] for o in outs)
    assert len(a) > 20 and len(b) > 20
    # Mutual exclusion: no span of one process overlaps a span of the other.
    events = sorted([(s, e, 0) for s, e in a] + [(s, e, 1) for s, e in b])
    for (_, e1, _), (s2, _, _) in zip(events, events[1:], strict=False):
        assert s2 >= e1 - 1e-4
    # Fairness: each got close to half the turns, and turns alternate rather than run in streaks.
    assert 0.4 <= len(a) / (len(a) + len(b)) <= 0.6, (len(a), len(b))
    owners = [o for _, _, o in events]
    switches = sum(1 for x, y in zip(owners, owners[1:], strict=False) if x != y)
    assert switches >= 0.6 * (len(owners) - 1), switches


def test_a_killed_holder_does_not_block_the_others(tmp_path):
    from engine.cpu_share import CpuTurn

    holder = children.start(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from engine.cpu_share import CpuTurn\n"
            "t = CpuTurn(Path(sys.argv[1]))\n"
            "with t():\n    print('held', flush=True); time.sleep(600)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    turn = CpuTurn(tmp_path)
    with turn():
        pass
    assert turn.turns == 1


def test_sharing_can_be_switched_off_and_an_unwritable_folder_only_loses_sharing(tmp_path, monkeypatch):
    from engine.cpu_share import CpuTurn, sharing_enabled

    monkeypatch.setenv("PONDER_CPU_SHARE", "0")
    assert not sharing_enabled()
    monkeypatch.setenv("PONDER_CPU_SHARE", "1")
    assert sharing_enabled()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    turn = CpuTurn(blocked / "sub")
    with turn():  # decodes go on, unshared
        pass
    assert turn.turns == 0


def test_bench_processes_reports_solo_each_and_fair_ratio(model_path):
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "bench", "--processes", "2", "--seconds", "2", "--n", "2",
         "--tokens", "8", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["processes"] == 2 and len(out["each_tok_s"]) == 2
    assert out["solo_tok_s"] > 0 and out["unshared_solo_tok_s"] > 0 and all(x > 0 for x in out["each_tok_s"])
    assert abs(out["fair_ratio"] - min(out["each_tok_s"]) / (out["solo_tok_s"] / 2)) < 0.01
    assert all(w > 0 for w in out["each_waited_s"])  # the copies did wait for each other
