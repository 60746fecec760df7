"""``ponder sessions``: the saved sessions — list, show, replay, export, import, delete, rerun; a
table of actions, each a function over the store."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.cli import EXIT_OK, EXIT_RUNS_FAILED
from engine.cli.options import DB_HELP, add_server_args, print_json, server_executor, servers
from engine.errors import InvalidRequestError, PonderError
from engine.events import (
    Event,
    NodeAdded,
    NodeFinished,
    NodePruned,
    NodeScored,
    RunFinished,
    RunStarted,
    Selected,
    Trace,
)
from engine.run.export import export_session
from engine.run.rerun import backend_kind, rerun, rerun_plan
from engine.store import RunInfo, Store, StoreError, import_session, write_export
from engine.worker import CancelToken


def add_arguments(p: argparse.ArgumentParser) -> None:
    ss = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = ss.add_parser("list", help="saved sessions, newest first")
    q.add_argument("--search", help="only sessions whose problem or title contains this")
    q.add_argument("--model", help="only sessions run with a model whose name contains this")
    q.add_argument("--correct", choices=["yes", "no"], help="only sessions with a correct (or wrong) run")
    q.add_argument("--since", help="only sessions from this date on (YYYY-MM-DD)")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    for name, hlp in (
        ("show", "one session: its problem, runs, answers"),
        ("replay", "print a session's events in the order they happened"),
        ("delete", "delete a session and everything in it"),
        ("rerun", "run a session again (same model, parameters, seed) and check it reproduces"),
    ):
        q = ss.add_parser(name, help=hlp)
        q.add_argument("id", help="session id (a unique prefix is enough)")
        if name == "replay":
            q.add_argument("--delay", type=float, default=0.0, help="seconds between events")
        if name == "delete":
            q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name == "rerun":
            q.add_argument("--threads", type=int, help="override the recorded thread count")
            add_server_args(q)
            q.add_argument(
                "--model", help="with --server: the server model to use instead of the recorded one"
            )
    q = ss.add_parser("export", help="write a session as JSON, JSONL or a self-contained HTML page")
    q.add_argument("id", help="session id (a unique prefix is enough)")
    q.add_argument("--format", choices=["json", "jsonl", "html"], default="json")
    q.add_argument("--out", help="file to write (default: standard output)")
    q = ss.add_parser("import", help="add a session exported as JSON or JSONL")
    q.add_argument("file")
    for q in ss.choices.values():
        q.add_argument("--db", help=DB_HELP)
        q.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    act = args.action
    writes = act in ("delete", "import", "rerun")
    try:
        store = Store.open(args.db, readonly=not writes)
    except StoreError as e:
        if act == "list" and "no session database" in str(e).lower():
            print("[]" if args.json else "No sessions yet.")
            return EXIT_OK
        raise
    try:
        return ACTIONS[act](store, args)
    finally:
        store.close()


def _ans(a: str | None) -> str:
    return "-" if a is None else str(a)


def _fmt_run(r: RunInfo) -> str:
    mark = {True: "correct", False: "wrong", None: ""}[r.correct]
    return (
        f"  {r.strategy:<12} {r.status:<11} answer {_ans(r.answer):<12} {mark:<8}"
        f" {r.generated_tokens:>6} tok {r.wall_s:>7.1f} s  {r.n_nodes} nodes  run {r.id}"
    )


def _sessions_list(store: Store, args: argparse.Namespace) -> int:
    correct = {"yes": True, "no": False, None: None}[args.correct]
    rows = store.list_sessions(
        search=args.search, model=args.model, correct=correct, since=args.since, limit=args.limit or None
    )
    if args.json:
        print_json([s.as_dict(with_build=False) for s in rows])
        return 0
    if not rows:
        print(
            "No sessions match."
            if (args.search or args.model or args.correct or args.since)
            else "No sessions yet."
        )
        return 0
    for s in rows:
        answers = ", ".join(
            f"{r.strategy}={r.answer if r.answer is not None else '-'}"
            + {True: " ok", False: " x", None: ""}[r.correct]
            + ("" if r.status == "done" else f" ({r.status})")
            for r in s.runs
        )
        title = s.title.replace("\n", " ")
        print(f"{s.id}  {s.created[:16].replace('T', ' ')}  {title[:50]:<50}  {answers}")
    return 0


def _sessions_show(store: Store, args: argparse.Namespace) -> int:
    s = store.session(args.id)
    if args.json:
        print_json(s.as_dict())
        return 0
    print(f"Session {s.id}  ({s.created})" + (f"  rerun of {s.rerun_of}" if s.rerun_of else ""))
    print(f"Problem: {s.problem}")
    if s.reference:
        print(f"Reference: {s.reference}")
    if s.tags:
        print(f"Tags: {', '.join(s.tags)}")
    st = s.settings
    if st:
        print(
            f"Settings: budget {st.get('budget')}, PRM {st.get('prm')}, seed {st.get('seed')}, "
            f"max tokens {st.get('max_tokens')}, "
            + ("side by side" if st.get("concurrent") else "one after another")
        )
    if s.runs:
        print(f"Model: {s.runs[0].model_name} ({s.runs[0].model_path})")
    print("Runs:")
    for r in s.runs:
        print(_fmt_run(r))
        if r.message:
            print(f"      {r.message}")
    return 0


def _replay_line(trace: Trace, ev: Event) -> str:
    """What one replayed event did, read from the run's trace once the event is folded in."""
    node = trace.nodes.get(getattr(ev, "node_id", None))  # type: ignore[arg-type]  # no node_id: None, no node
    if isinstance(ev, RunStarted):
        return f"started {ev.strategy} seed {ev.seed}"
    if isinstance(ev, NodeAdded) and node is not None:
        text = node.text.strip().replace("\n", " ")
        return f"+ node {node.id} ({node.role}, parent {node.parent_id}) {text[:70]}"
    if isinstance(ev, NodeScored):
        return f"  node {ev.node_id} scored {ev.score:.2f}"
    if isinstance(ev, NodePruned) and node is not None:
        return f"  node {node.id} pruned (round {node.pruned_at})"
    if isinstance(ev, NodeFinished) and node is not None:
        return f"  node {node.id} finished ({node.finish_reason}) answer {node.answer}"
    if isinstance(ev, Selected) and trace.selected is not None:
        return f"selected {trace.selected.answer} ({trace.selected.method})"
    if isinstance(ev, RunFinished) and trace.finished is not None:
        f = trace.finished
        return f"finished: {f.status} {f.generated_tokens} tokens {f.wall_s:.1f} s"
    return ev.kind


def _sessions_replay(store: Store, args: argparse.Namespace) -> int:
    """The session's events in the order they happened, each folded into its run's trace (the fold
    the app and the recorder use) and told from it."""
    s = store.session(args.id)
    names = {r.id: r.strategy for r in s.runs}
    traces: dict[str, Trace] = {}
    for rid, ev in store.replay(s.id):
        trace = traces.setdefault(rid, Trace())
        try:
            trace.apply(ev)
        except PonderError:  # a stream the fold refuses (an old export): shown as it is
            traces[rid] = trace = Trace()
        if args.json:
            print_json(ev.to_dict())
        else:
            print(f"{names.get(rid, rid):<12} {_replay_line(trace, ev)}")
        sys.stdout.flush()
        if args.delay > 0:
            time.sleep(args.delay)
    return EXIT_OK


def _sessions_export(store: Store, args: argparse.Namespace) -> int:
    text = export_session(store, args.id, args.format)  # a missing session is reported before any file
    if not args.out:
        print(text)
        return 0
    out = write_export(args.out, text)
    print(f"Wrote {out}", file=sys.stderr)
    return 0


def _sessions_import(store: Store, args: argparse.Namespace) -> int:
    sid = import_session(store, Path(args.file).expanduser())
    print_json({"session_id": sid}) if args.json else print(f"Imported session {sid}")
    return 0


def _sessions_delete(store: Store, args: argparse.Namespace) -> int:
    s = store.session(args.id)
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidRequestError("Deleting needs confirmation: add --yes.")
        reply = input(f"Delete session {s.id} ({s.title[:40]!r}, {len(s.runs)} runs)? [y/N] ")
        if reply.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 0
    store.delete_session(s.id)
    print(f"Deleted session {s.id}")
    return 0


def _sessions_rerun(store: Store, args: argparse.Namespace) -> int:
    cancel = CancelToken()
    session, settings = rerun_plan(store, args.id)
    executor = None
    if backend_kind(settings) == "server":
        recorded = settings.get("backend") or {}
        if not servers(args):
            args.server = list(recorded.get("servers") or [])
        if getattr(args, "prm_server", None) is None and (recorded.get("prm") or {}).get("servers"):
            args.prm_server = list(recorded["prm"]["servers"])
        try:
            executor = server_executor(args, model=args.model or recorded.get("model"))
        except PonderError as e:
            raise PonderError(
                f"{e} (give --server URL to rerun session {session.id} on another server)"
            ) from e
    elif servers(args):
        raise InvalidRequestError(
            f"Session {session.id} ran in process; rerun it without --server "
            "(a rerun keeps the backend kind)."
        )
    from engine.cli.progress import Progress
    from engine.run.request import CompareRequest

    shown = Progress.for_compare(CompareRequest.from_session(session).checked(), json=args.json)
    try:
        with shown:
            report = rerun(store, args.id, threads=args.threads, cancel=cancel, executor=executor, sink=shown)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        if executor is not None:
            executor.close()
    code = EXIT_RUNS_FAILED if any(r.status == "failed" for r in report.runs) else EXIT_OK
    if args.json:
        print_json(report.as_dict())
        return code
    print(f"Rerun of {report.session_id} saved as {report.new_session_id}")
    for r in report.runs:
        verdict = "same texts" if r.texts_match else "texts differ"
        ans = "same answer" if r.answers_match else f"answer {r.old_answer} -> {r.new_answer}"
        print(f"  {r.strategy:<12} {verdict}, {ans} ({r.n_nodes[0]} / {r.n_nodes[1]} nodes)")
        if r.status != "done":
            print(f"      the rerun {r.status}")
        if r.first_difference:
            print(f"      first difference: {r.first_difference}")
    if report.conditions:
        print("Conditions that differ: " + "; ".join(report.conditions))
    elif not report.reproduced:
        print("Same model file, build, threads and batch layout, yet different: please report this.")
    print("Reproduced." if report.reproduced else "Not reproduced.")
    return code


ACTIONS: dict[str, Callable[[Store, argparse.Namespace], int]] = {
    "list": _sessions_list,
    "show": _sessions_show,
    "replay": _sessions_replay,
    "export": _sessions_export,
    "import": _sessions_import,
    "delete": _sessions_delete,
    "rerun": _sessions_rerun,
}
