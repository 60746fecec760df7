"""Every strategy, PRM, sweep and fault over real llama-server processes on loopback, on the embedded
model (built by `make test` from the llama.cpp source of the pinned llama-cpp-python)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from comparing import check_complete, compare, recorded_compare, sweep_killed_and_resumed
from processes import children_of, pid_alive

from engine import children
from engine.backends.server.executor import ServerExecutor
from engine.backends.server.launch import LlamaServer
from engine.backends.server.pool import ServerPool
from engine.events import NodeAdded, NodeScored, RunStarted, TextDelta
from engine.search import default_strategies
from engine.store import Store

PROBLEM = "Tom has 3 apples and buys 5 more. How many apples does he have?"


@pytest.fixture(scope="module")
def server(model_path):
    with LlamaServer(model_path, parallel=4, ctx=8192) as srv:
        yield srv


# Two servers on one small machine each get one thread: llama.cpp's threads spin while they wait,
# and two servers with a thread per core each would spend their time taking cores from each other.
TWO = dict(parallel=2, ctx=4096, threads=1)


@pytest.fixture(scope="module")
def two_servers(model_path):
    a = LlamaServer(model_path, **TWO).start()
    b = LlamaServer(model_path, **TWO).start()
    yield a, b
    a.stop()
    b.stop()


def _executor(urls, **kw) -> ServerExecutor:
    return ServerExecutor(ServerPool.connect(list(urls), **kw))


def test_prompts_are_token_for_token_what_the_in_process_path_renders(server, backend):
    from engine.protocol import SYSTEM_PROMPT
    from engine.search.revisions import REVISE_PROMPT

    ex = _executor([server.url])
    try:
        for msgs in (
            (("system", SYSTEM_PROMPT), ("user", PROBLEM)),
            (
                ("system", SYSTEM_PROMPT),
                ("user", PROBLEM),
                ("assistant", "8 apples.\n\n"),
                ("user", REVISE_PROMPT),
            ),
            (("user", "Ünïcödé — ✓ \\boxed{x}"),),
        ):
            ours = ex.pool.loop.run(ex.pool.chat_tokens(msgs))
            assert ours == backend.chat_tokens([{"role": r, "content": t} for r, t in msgs])
        assert ex.pool.info.dialect == "llama-server" and ex.pool.info.slots == 4
        assert ex.pool.info.model == Path(server.model).name
    finally:
        ex.close()


def test_default_strategies_with_the_judge_over_one_server(server, tmp_path):
    ex = _executor([server.url])
    store = Store.open(tmp_path / "s.db")
    try:
        sid, runs, err = recorded_compare(
            ex, store, PROBLEM, default_strategies(), budget=4, prm="judge", reference="8", max_tokens=48
        )
        assert err is None
        check_complete(runs)
        assert all(r.prm_tokens > 0 and r.prompt_tokens > 0 for r in runs)
        s = store.session(sid)
        backend = s.settings["backend"]
        assert backend["kind"] == "server" and backend["servers"] == [server.url]
        assert backend["model"] == Path(server.model).name and backend["dialect"] == "llama-server"
        assert "llama-cpp-python" in backend["build"] or backend["build"]
        assert s.runs[0].model_name == Path(server.model).name
        started = store.events(s.runs[0].id)[0]
        assert started.model["backend"] == "server" and started.model["servers"] == [server.url]
    finally:
        store.close()
        ex.close()


def test_two_servers_share_the_work_and_children_follow_their_parent(two_servers):
    a, b = two_servers
    ex = _executor([a.url, b.url])
    sent: list[tuple[str | None, str]] = []
    real = ex.pool.complete_n

    async def spy(req, affinity=None):
        outs, srv = await real(req, affinity)
        sent.append((affinity.url if affinity is not None else None, srv.url))
        return outs, srv

    ex.pool.complete_n = spy  # type: ignore[method-assign]
    try:
        runs = compare(ex, PROBLEM, default_strategies(), budget=4, prm="judge", max_tokens=48)
        check_complete(runs)
        continued = [(want, got) for want, got in sent if want is not None]
        assert continued, "beam search continued no node"
        assert all(want == got for want, got in continued)  # prefix affinity
        assert {got for _, got in sent} == {a.url, b.url}  # both servers worked
    finally:
        ex.close()


def test_the_openai_compatible_path_works_on_a_real_server(server):
    """vLLM and SGLang are spoken to through /v1/completions; llama-server speaks it too."""
    ex = _executor([server.url])
    for c in ex.pool.clients:
        c.info.dialect = "openai"
    try:
        runs = compare(ex, PROBLEM, ["best_of_n", "beam_search"], budget=2, prm="judge", max_tokens=40)
        check_complete(runs)
    finally:
        ex.close()


def _kill_when(server: LlamaServer, ready: threading.Event) -> threading.Thread:
    def go():
        ready.wait(120)
        server.kill()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_a_server_killed_mid_run_fails_the_runs_clearly_and_keeps_their_events(model_path, tmp_path):
    srv = LlamaServer(model_path, parallel=2, ctx=4096).start()
    ex = _executor([srv.url], retries=1)
    store = Store.open(tmp_path / "s.db")
    first = threading.Event()
    try:
        killer = _kill_when(srv, first)
        sid, runs, err = recorded_compare(
            ex,
            store,
            PROBLEM,
            ["best_of_n", "beam_search"],
            budget=4,
            prm="judge",
            max_tokens=400,
            on_event=lambda run, ev: first.set() if isinstance(ev, NodeAdded) else None,
        )
        killer.join(5)
        assert err is None
        assert {r.status for r in runs} == {"failed"}
        for r in runs:
            assert srv.url in r.message and "Traceback" not in r.message
        s = store.session(sid)
        assert {r.status for r in s.runs} == {"failed"}
        assert sum(r.n_events for r in s.runs) >= 3  # what happened before the kill is kept
    finally:
        store.close()
        ex.close()
        srv.stop()


def _term_when(
    server: LlamaServer, ready: threading.Event, at: list[float], delay: float = 0.0
) -> threading.Thread:
    """SIGTERM ``delay`` seconds after ``ready`` is set: llama-server then closes its port but keeps
    the requests it holds unanswered, and its process alive (measured: refused from about 2 s on,
    nothing answered in 60 s)."""

    def go():
        ready.wait(120)
        time.sleep(delay)
        at.append(time.monotonic())
        server.proc.send_signal(signal.SIGTERM)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_a_server_that_stops_answering_mid_run_is_noticed_in_seconds_not_at_the_timeout(model_path):
    """SIGTERM mid-run: the health probe is refused within a few seconds and the runs fail naming
    the server, long before the 600 s request timeout."""
    srv = LlamaServer(model_path, parallel=2, ctx=4096).start()
    ex = _executor([srv.url], retries=1, timeout=600)
    first, at = threading.Event(), []
    try:
        term = _term_when(srv, first, at, delay=3.0)  # 16 solutions through 2 slots: mid-run
        runs = compare(
            ex,
            PROBLEM,
            ["best_of_n"],
            budget=16,
            prm="judge",
            max_tokens=256,
            on_event=lambda run, ev: first.set() if isinstance(ev, RunStarted) else None,
        )
        ended = time.monotonic()
        term.join(5)
        assert at, "the run ended before the server was stopped"
        (run,) = runs
        assert run.status == "failed"
        assert srv.url in run.message and "stopped answering" in run.message, run.message
        assert ended - at[0] < 30, f"noticed after {ended - at[0]:.1f} s"
        assert ex.pool.clients[0].probes >= 1
    finally:
        ex.close()
        srv.kill()  # after SIGTERM it would hold on to its requests


@pytest.mark.parametrize("how", ["killed", "stops answering"])
def test_with_two_servers_one_that_dies_leaves_the_run_to_the_survivor(model_path, how):
    """SIGKILL drops the connections at once; after SIGTERM llama-server holds them unanswered and
    refuses new ones, which the health probe notices: either way the other server finishes the run."""
    a = LlamaServer(model_path, **TWO).start()
    b = LlamaServer(model_path, **TWO).start()
    ex = _executor([a.url, b.url], retries=1, timeout=600)
    first, at = threading.Event(), []
    try:
        stop = _kill_when(a, first) if how == "killed" else _term_when(a, first, at)
        t0 = time.monotonic()
        runs = compare(
            ex,
            PROBLEM,
            ["best_of_n", "beam_search"],
            budget=4,
            prm="judge",
            max_tokens=64,
            on_event=lambda run, ev: first.set() if isinstance(ev, NodeScored) else None,
        )
        stop.join(5)
        assert first.is_set(), "the run ended before the server was stopped"
        check_complete(runs)
        assert [c.alive for c in ex.pool.clients] == [False, True]
        assert time.monotonic() - t0 < 300
    finally:
        ex.close()
        a.kill()
        b.stop()


def test_cancel_stops_requests_in_flight_within_a_second(server):
    ex = _executor([server.url])
    cancel = threading.Event()
    out: dict = {}

    def go():
        out["runs"] = compare(
            ex,
            PROBLEM,
            ["best_of_n"],
            budget=4,
            prm="arithmetic",
            max_tokens=2000,
            cancel=cancel.is_set,
        )
        out["t"] = time.monotonic()

    try:
        with urllib.request.urlopen(server.url + "/slots", timeout=5) as r:
            assert r.status == 200
        t = threading.Thread(target=go)
        t.start()
        time.sleep(2.0)  # the four requests are generating
        t_cancel = time.monotonic()
        cancel.set()
        t.join(30)
        assert out["t"] - t_cancel < 1.0
        assert out["runs"][0].status == "cancelled"
        # The server stopped generating for us: it notices a closed connection within its 1 s
        # polling interval (asking /slots more often than that would keep it from looking).
        time.sleep(2.5)
        import json

        with urllib.request.urlopen(server.url + "/slots", timeout=5) as r:
            slots = json.loads(r.read())
        assert not any(s.get("is_processing") for s in slots)
    finally:
        ex.close()


def _cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_the_api_key_reaches_the_server_and_nothing_else(model_path, tmp_path):
    key = "pk-test-0123456789"
    with LlamaServer(model_path, parallel=2, ctx=4096, api_key=key) as srv:
        db = tmp_path / "s.db"
        r = _cli(
            "compare",
            PROBLEM,
            "--server",
            srv.url,
            "--prm",
            "arithmetic",
            "--budget",
            "2",
            "--max-tokens",
            "24",
            "--db",
            str(db),
            "--json",
            env={"PONDER_API_KEY": key},
        )
        assert r.returncode == 0, r.stderr
        assert key not in r.stdout + r.stderr
        bad = _cli("compare", PROBLEM, "--server", srv.url, "--api-key", "nope", "--db", str(db))
        assert bad.returncode == 2 and "refused the API key" in bad.stderr
        sid = __import__("json").loads(r.stdout)["session_id"]
        exported = _cli("sessions", "export", sid, "--db", str(db), "--format", "html")
        assert exported.returncode == 0 and srv.url in exported.stdout
    for path in tmp_path.iterdir():  # the database, its WAL: not a byte of the key
        assert key.encode() not in path.read_bytes()
    assert key not in exported.stdout


@pytest.mark.skipif(not children.dies_with_parent(), reason="PR_SET_PDEATHSIG is Linux's")
def test_ponder_serve_killed_hard_takes_its_llama_server_along(model_path):
    """SIGKILL (or the out-of-memory killer) on ``ponder serve`` runs none of its clean-up: the
    llama-server must still end within a few seconds and free the port."""
    from engine.backends.server.launch import free_port

    port = free_port()
    p = subprocess.Popen(  # the test's own process: it is the one killed
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--port",
            str(port),
            "--parallel",
            "1",
            "--ctx",
            "1024",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = p.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        (server_pid,) = children_of(p.pid)
        assert pid_alive(server_pid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 5
        while pid_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(server_pid), "llama-server outlived ponder serve"
        import socket

        with pytest.raises(ConnectionRefusedError):  # nobody listens there any more
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        with socket.socket() as s:  # and a new server can take the port (as llama-server binds it)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
    finally:
        if p.poll() is None:
            p.kill()


def test_ponder_serve_prints_its_url_and_stops_on_ctrl_c(model_path):
    from engine.backends.server.launch import free_port

    port = free_port()
    p = children.start(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "serve",
            "--port",
            str(port),
            "--parallel",
            "2",
            "--ctx",
            "2048",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        url = p.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            assert r.status == 200
        p.send_signal(signal.SIGINT)
        assert p.wait(20) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=2)
    finally:
        if p.poll() is None:
            p.kill()


def test_a_sweep_over_a_server_resumes_without_redoing_finished_cells(server, tmp_path):
    sweep_killed_and_resumed(server.url, tmp_path)


def test_rerun_of_a_server_session_runs_on_the_server_and_says_what_differs(server, tmp_path):
    db = tmp_path / "s.db"
    r = _cli(
        "compare",
        PROBLEM,
        "--server",
        server.url,
        "--prm",
        "arithmetic",
        "--budget",
        "2",
        "--strategies",
        "best_of_n",
        "--max-tokens",
        "24",
        "--db",
        str(db),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    sid = __import__("json").loads(r.stdout)["session_id"]
    again = _cli("sessions", "rerun", sid, "--db", str(db), "--json")
    assert again.returncode == 0, again.stderr
    report = __import__("json").loads(again.stdout)
    assert any("server" in c for c in report["conditions"])
    with Store.open(db, readonly=True) as st:
        new = st.session(report["new_session_id"])
    assert new.settings["backend"]["kind"] == "server" and new.rerun_of == sid
    # A rerun keeps the backend kind: an in-process session does not move to a server.
    local = _cli(
        "compare",
        "What is 1 + 1?",
        "--prm",
        "arithmetic",
        "--budget",
        "1",
        "--strategies",
        "best_of_n",
        "--max-tokens",
        "8",
        "--db",
        str(db),
        "--json",
    )
    assert local.returncode == 0, local.stderr
    lid = __import__("json").loads(local.stdout)["session_id"]
    moved = _cli("sessions", "rerun", lid, "--db", str(db), "--server", server.url)
    assert moved.returncode == 2 and "ran in process" in moved.stderr


def test_prms_on_a_prm_server_score_as_they_do_in_process(server, backend):
    """The judge and the token-PRM formats read at one-token verdicts over a PRM server (here the
    same server as a separate PRM pool): the step scores of the in-process PRMs, up to tokenization
    at step boundaries (the server judge renders the whole conversation)."""
    from engine.backends.server.prm import ServerVerdictPRM
    from engine.errors import PonderError
    from engine.prm import JudgePRM, TokenPRM
    from engine.prm.registry import verdict_format

    question = "Tom has 3 apples and buys 5 more. How many apples does he have?"
    good = ["Tom starts with 3 apples.\n\n", "3 + 5 = 8\n\n", "The answer is $\\boxed{8}$."]
    bad = ["Tom starts with 3 apples.\n\n", "3 + 5 = 9\n\n", "The answer is $\\boxed{9}$."]
    policy = ServerPool.connect([server.url])
    prm_pool = ServerPool.connect([server.url], loop=policy.loop)
    ex = ServerExecutor(policy, prm_pool)
    try:
        judge = ex.make_prm("judge", None)
        assert isinstance(judge, ServerVerdictPRM) and judge.pool is prm_pool
        remote, used = policy.loop.run(judge.score_async(question, [good, bad]))
        local = JudgePRM(backend).score(question, [good, bad])
        assert used > 0 and [len(s) for s in remote] == [3, 3]
        for r, lo in zip(remote, local, strict=True):
            assert r == pytest.approx(lo, abs=0.15)
        again, used_again = policy.loop.run(judge.score_async(question, [good]))
        assert again[0] == remote[0] and used_again == 0  # each step judged once
        with pytest.raises(PonderError, match="no single token for the step tag"):
            policy.loop.run(ex.make_prm("math-shepherd", None).score_async(question, [good]))
        for fmt in ("math-shepherd", "rlhflow"):
            tagged = verdict_format(fmt).with_settings({"step_tag": "\n"})
            prm = ServerVerdictPRM(prm_pool, tagged)
            remote, _ = policy.loop.run(prm.score_async(question, [good, bad]))
            local = TokenPRM(backend, tagged).score(question, [good, bad])
            for r, lo in zip(remote, local, strict=True):
                assert r == pytest.approx(lo, abs=0.15), fmt
    finally:
        ex.close()


def test_the_server_bench_measures_ponder_against_a_minimal_client(server):
    import json

    r = _cli(
        "bench",
        "--server",
        server.url,
        "--tokens",
        "16",
        "--repeat",
        "1",
        "--n",
        "4",
        "--no-compare",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n"] == 4 and out["dialect"] == "llama-server" and not out["started_here"]
    assert out["ponder_tok_s"] > 0 and out["minimal_tok_s"] > 0
    assert out["client_ratio"] == pytest.approx(out["ponder_tok_s"] / out["minimal_tok_s"], rel=0.01)


def test_particle_filtering_budget_forcing_and_revisions_over_a_server(server):
    """The new strategies over llama-server: particles forked from their nodes, budget forcing's
    continuations sent as the parent's prompt and text plus "Wait", revisions' chats served from
    the prefix cache of the server that holds the attempt."""
    ex = _executor([server.url])
    try:
        runs = compare(
            ex, PROBLEM, ["particle_filtering", "budget_forcing", "revisions"], budget=4, prm="arithmetic",
            max_tokens=40, overrides={"revisions": {"chains": 1}},
        )  # fmt: skip
        for r in runs:
            events = [e for e in r.events if not isinstance(e, TextDelta)]
            assert events[-1].status == "done", (r.spec.name, events[-1].message)
            t = r.trace()
            assert t.nodes and all(n.scores for n in t.nodes.values()), r.spec.name
            assert t.selected is not None
        bf = runs[1].trace()
        chain = bf.path_to(bf.selected.node_id)
        assert len(chain) >= 2  # made to go on at least once (4 segments of at most 40 tokens)
        assert all(bf.nodes[i].role in ("continuation", "answer") for i in chain[1:])
        assert runs[2].cached_tokens > 0  # later attempts found their chat in the server's cache
    finally:
        ex.close()


def test_budgets_beyond_the_servers_slots_queue_and_are_charged_their_flops(server):
    """Four slots: best-of-16 and beam search at 16 beside it; requests past the slots wait on the
    server's queue, every node is scored, and the FLOPs use the parameters the server reports."""
    ex = _executor([server.url])
    try:
        runs = compare(ex, PROBLEM, ["best_of_n", "beam_search"], budget=16, prm="arithmetic", max_tokens=12)
        check_complete(runs)
        bon = runs[0].trace()
        assert len(bon.nodes) == 16
        n = ex.record()["n_params"]
        assert n and runs[0].policy_flops == 2 * n * (runs[0].prompt_tokens + runs[0].generated_tokens)
    finally:
        ex.close()
