"""The fuzz suite's cases and the child process that runs them (tests/integration/test_fuzz.py drives it).

Each group runs in a child process (``python tests/helpers/fuzzing.py GROUP SEED WORKDIR N``) so that a
crash of the C library is a reported failure naming its case, not a dead test run. The child runs
every case through Ponder's own CLI entry point (``engine.cli.main``, as a user would meet it),
prints one JSON line per case, and arms a watchdog per case: a case that hangs dumps the stacks and
ends the child, and the parent names the case.

Groups, all seeded:

* ``gguf``: the embedded model's GGUF with its header mutated (bytes flipped, string lengths
  wrong, counts huge, value types wrong, the file cut inside the header), then ``ponder generate``
  on it: a clear refusal or two generated tokens.
* ``problems``: random problem texts (control characters, mixed scripts, 100k characters, lone
  surrogates, empty) through ``ponder compare`` (best-of-1, two tokens) into a database, then
  exported and imported back: a clear refusal, or the session saved with the problem as given.
* ``db``: bit-flipped copies of a real session database through ``sessions list / show / export``.
* ``exports``: malformed export files through ``sessions import``, and what was imported shown.
"""

from __future__ import annotations

import contextlib
import faulthandler
import hashlib
import io
import json
import os
import random
import shutil
import struct
import sys
import time
from pathlib import Path

CASE_TIMEOUT_S = 60  # a case still running after this is a hang
REPORT: dict[str, dict[str, object]] = {}  # filled by tests/integration/test_fuzz.py, printed by conftest

# --- GGUF header fields ------------------------------------------------------------------------------

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


def gguf_fields(data: bytes) -> tuple[list[tuple[str, int, int]], int]:
    """(field kind, offset, size) of every length, count and type field of a valid GGUF header, and
    the header's end."""
    fields: list[tuple[str, int, int]] = []
    pos = 4

    def u32() -> int:
        nonlocal pos
        v = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        return v

    def u64() -> int:
        nonlocal pos
        v = struct.unpack_from("<Q", data, pos)[0]
        pos += 8
        return v

    def string(kind: str) -> str:
        nonlocal pos
        fields.append((kind, pos, 8))
        n = u64()
        if n:
            fields.append(("text", pos, n))
        pos += n
        return data[pos - n : pos].decode("utf-8", "replace")

    def value(vtype: int, key: str = "") -> None:
        nonlocal pos
        if vtype == STRING:
            string("string_len")
        elif vtype == ARRAY:
            fields.append(("array_type", pos, 4))
            itype = u32()
            fields.append(("array_count", pos, 8))
            n = u64()
            if itype in _SCALAR_SIZES:
                pos += n * _SCALAR_SIZES[itype]
            else:
                for _ in range(n):
                    value(itype)
        else:
            if key:
                fields.append((f"scalar{_SCALAR_SIZES[vtype]}", pos, _SCALAR_SIZES[vtype]))
            pos += _SCALAR_SIZES[vtype]

    fields.append(("version", pos, 4))
    u32()
    fields.append(("n_tensors", pos, 8))
    n_tensors = u64()
    fields.append(("n_kv", pos, 8))
    n_kv = u64()
    for _ in range(n_kv):
        key = string("key_len")
        fields.append(("value_type", pos, 4))
        value(u32(), key)
    for _ in range(n_tensors):
        string("tensor_name_len")
        fields.append(("n_dims", pos, 4))
        n_dims = u32()
        for _ in range(n_dims):
            fields.append(("dim", pos, 8))
            pos += 8
        fields.append(("tensor_type", pos, 4))
        pos += 4
        fields.append(("tensor_offset", pos, 8))
        pos += 8
    return fields, pos


def gguf_mutations(
    data: bytes, rng: random.Random, n: int
) -> list[tuple[str, list[tuple[int, bytes]], int | None]]:
    """``n`` mutations: (label, patches [(offset, bytes)], cut the file at, or None)."""
    fields, header_end = gguf_fields(data)
    by_kind: dict[str, list[tuple[int, int]]] = {}
    for kind, off, size in fields:
        by_kind.setdefault(kind, []).append((off, size))
    out = []
    huge = [2**64 - 1, 2**63, 2**40, 2**32, 2**31 - 1, 10**9, 123456789]
    for i in range(n):
        kind = ("flip", "string", "count", "type", "cut", "value", "text")[i % 7]
        if kind == "flip":
            patches = []
            for _ in range(rng.randint(1, 4)):
                off = rng.randrange(4, header_end)
                patches.append((off, bytes([data[off] ^ rng.randint(1, 255)])))
            out.append((f"flip {[p[0] for p in patches]}", patches, None))
        elif kind == "string":
            k = rng.choice(["key_len", "string_len", "tensor_name_len"])
            off, _ = rng.choice(by_kind[k])
            cur = struct.unpack_from("<Q", data, off)[0]
            new = rng.choice([0, max(0, cur - 1), cur + 1, cur + rng.randint(2, 4096), rng.choice(huge)])
            out.append((f"{k}@{off} {cur}->{new}", [(off, struct.pack("<Q", new % 2**64))], None))
        elif kind == "count":
            k = rng.choice(["n_tensors", "n_kv", "array_count", "n_dims", "dim", "tensor_offset"])
            off, size = rng.choice(by_kind[k])
            new = rng.choice(huge + [0, 1, 7, 65])
            out.append((f"{k}@{off} ->{new}", [(off, new.to_bytes(8, "little")[:size])], None))
        elif kind == "type":
            k = rng.choice(["value_type", "array_type", "tensor_type", "version"])
            off, size = rng.choice(by_kind[k])
            new = rng.choice([0, 1, 4, 6, 7, 8, 9, 10, 12, 13, 30, 39, 255, 2**31, 2**32 - 1])
            out.append((f"{k}@{off} ->{new}", [(off, new.to_bytes(4, "little"))], None))
        elif kind == "value":  # a metadata number llama.cpp reads (layer and head counts, ids, ...)
            k = rng.choice([k for k in by_kind if k.startswith("scalar")])
            off, size = rng.choice(by_kind[k])
            new = rng.choice([0, 1, 2**size * 8 - 1 if size < 8 else 2**63, 255, 65535, 2**31])
            out.append(
                (f"{k}@{off} ->{new}", [(off, (new % 2 ** (8 * size)).to_bytes(size, "little"))], None)
            )
        elif kind == "text":  # bytes inside a string: a token's text, the chat template, a name
            off, size = rng.choice(by_kind["text"])
            patches = []
            for _ in range(rng.randint(1, 3)):
                at = off + rng.randrange(size)
                patches.append(
                    (at, bytes([rng.choice([0, 0x80, 0xFF, ord("{"), ord("%"), data[at] ^ 0x20])]))
                )
            out.append((f"text@{off} {[p[0] for p in patches]}", patches, None))
        else:
            cut = rng.randrange(4, header_end + 64)
            out.append((f"cut at {cut}", [], cut))
    return out


# --- problem texts -----------------------------------------------------------------------------------

_SCRIPTS = [
    "What is 12 + 30?",
    "Сколько будет 7 × 6?",
    "一个数加上五等于十二，这个数是多少？",
    "ما هو ناتج ٣ + ٤؟",
    "क्या 9 − 4 = 5 है?",
    "😀🧮 2+2=? 👍🏽",
    "∫₀¹ x² dx = ?",
    "e\u0301\u0301\u0301 Zalgo t̷̢e̵x̶t̴",
    "\u202eRTL override\u202c and \u200b zero width",
]


def problem_texts(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for i in range(n):
        kind = ("controls", "scripts", "long", "surrogates", "random", "blank")[i % 6]
        if kind == "controls":
            body = "".join(
                rng.choice(["1+1?", " ", "\x00", "\x1b[31m", "\r", "\t", "\x07", "\x7f", "\n"])
                for _ in range(20)
            )
        elif kind == "scripts":
            body = " ".join(rng.choice(_SCRIPTS) for _ in range(rng.randint(1, 4)))
        elif kind == "long":
            body = rng.choice(_SCRIPTS) * rng.choice([2000, 6000, 8000])  # 30k-130k characters
            body = body[:100_000] if rng.random() < 0.5 else body
        elif kind == "surrogates":
            body = "What is " + rng.choice(["\ud800", "\udfff", "\udc80\udcff", "\ud83d"]) + " 2 + 2?"
        elif kind == "random":
            body = "".join(
                chr(
                    rng.choice(
                        [rng.randint(32, 126), rng.randint(0x80, 0x2FFF), rng.randint(0xE000, 0x10FFFF)]
                    )
                )
                for _ in range(rng.randint(1, 200))
            )
        else:
            body = rng.choice(["", " ", "\n\t ", "\u3000", "\x00"])
        out.append((kind, body))
    return out


# --- databases and exports ---------------------------------------------------------------------------


def bit_flips(size: int, rng: random.Random) -> list[tuple[int, int]]:
    """1-8 (byte offset, bit) pairs; half of them in the first pages, where SQLite keeps its
    header and schema, half anywhere."""
    out = []
    for _ in range(rng.randint(1, 8)):
        off = rng.randrange(0, min(size, 8192)) if rng.random() < 0.5 else rng.randrange(0, size)
        out.append((off, rng.randrange(8)))
    return out


def export_mutations(good_json: str, good_jsonl: str, rng: random.Random, n: int) -> list[tuple[str, bytes]]:
    doc = json.loads(good_json)
    out: list[tuple[str, bytes]] = []

    def dumps(d: object) -> bytes:
        return json.dumps(d).encode()

    for i in range(n):
        kind = i % 10
        d = json.loads(good_json)
        if kind == 0:
            cut = rng.randrange(0, len(good_json))
            out.append((f"json cut at {cut}", good_json[:cut].encode()))
        elif kind == 1:
            raw = bytearray(good_json.encode())
            for _ in range(rng.randint(1, 6)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            out.append(("json bytes flipped", bytes(raw)))
        elif kind == 2:
            key = rng.choice(sorted(d))
            d.pop(key)
            out.append((f"json without {key}", dumps(d)))
        elif kind == 3:
            key = rng.choice(sorted(d))
            d[key] = rng.choice([None, 0, -1, "x", [], {}, 1e308, [[[]]]])
            out.append((f"json {key} of the wrong type", dumps(d)))
        elif kind == 4:
            runs = d.get("events") or {}
            if isinstance(runs, dict) and runs:
                rid = rng.choice(sorted(runs))
                evs = runs[rid]
                if evs:
                    j = rng.randrange(len(evs))
                    choice = rng.randrange(4)
                    if choice == 0:
                        evs[j] = {"kind": "NoSuchEvent"}
                    elif choice == 1:
                        evs[j] = "not an object"
                    elif choice == 2 and isinstance(evs[j], dict):
                        evs[j].pop(rng.choice(sorted(evs[j])), None)
                    else:
                        evs[j] = (
                            {**evs[j], "node_id": rng.choice(["x", None, -5, 2**70])}
                            if isinstance(evs[j], dict)
                            else evs[j]
                        )
            out.append(("json with a bad event", dumps(d)))
        elif kind == 5:
            d["schema_version"] = rng.choice([99, -1, "2", None])
            out.append((f"json schema_version {d['schema_version']!r}", dumps(d)))
        elif kind == 6:
            lines = good_jsonl.splitlines()
            j = rng.randrange(len(lines))
            lines[j] = rng.choice(["", "{", "[]", "null", '{"run_id": 5}', lines[j][: len(lines[j]) // 2]])
            out.append((f"jsonl line {j} broken", "\n".join(lines).encode()))
        elif kind == 7:
            out.append(("not text", bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))))
        elif kind == 8:
            nested: object = 0
            for _ in range(rng.choice([100, 5000, 100_000])):
                nested = [nested]
            try:
                blob = dumps({**doc, "session": nested})
            except RecursionError:
                blob = b"[" * 100_000 + b"]" * 100_000
            out.append(("deeply nested", blob))
        else:
            d["session"] = {
                **(d.get("session") or {}),
                "problem": rng.choice(["", "\ud800", 5, None, "x" * 200_000]),
            }
            out.append(("json odd problem", dumps(d).replace(b"\\ud800", b"\\ud800")))
    return out


# --- the child ---------------------------------------------------------------------------------------


def _cli(args: list[str]) -> tuple[int, str, str]:
    from engine.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _digest(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _emit(i: int, label: str, code: int, err: str, **extra: object) -> None:
    print(json.dumps({"i": i, "label": label[:200], "code": code, "stderr": err[-600:], **extra}), flush=True)


def _fingerprint(p: Path) -> tuple[int, int, str]:
    """Size, modification time and a hash of the first 8 MiB (the header, where every mutation is)
    and the last MiB: enough to see that nothing wrote to a 94 MB file, at a fraction of a full hash."""
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(8 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    return st.st_size, st.st_mtime_ns, h.hexdigest()


def run_gguf(seed: int, work: Path, n: int) -> None:
    from engine.models import describe, embedded_model_path

    src = embedded_model_path()
    assert src is not None
    data = src.read_bytes()
    cases = gguf_mutations(data[: 8 << 20], random.Random(seed), n)
    target = work / "mutated.gguf"
    shutil.copyfile(src, target)
    for i, (label, patches, cut) in enumerate(cases):
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        # Patch a copy in place (and put the bytes back afterwards); only a cut needs a fresh copy.
        if target.stat().st_size != len(data):
            shutil.copyfile(src, target)
        with open(target, "r+b") as f:
            for off, b in patches:
                f.seek(off)
                f.write(b)
            if cut is not None:
                f.truncate(cut)
        before = _fingerprint(target)
        code, out, err = _cli(
            ["generate", "1+1=", "--model", str(target), "--max-tokens", "2", "--ctx", "256", "-n", "1"]
        )
        entry = describe(target, "user", [])  # what the model list shows for it
        unchanged = _fingerprint(target) == before
        with open(target, "r+b") as f:
            for off, b in patches:
                f.seek(off)
                f.write(data[off : off + len(b)])
        _emit(i, label, code, err, unchanged=unchanged, listed=entry.ok or bool(entry.error))
        faulthandler.cancel_dump_traceback_later()


def run_problems(seed: int, work: Path, n: int) -> None:
    """One model for every case (the engine's entry, as the app and the CLI call it); every tenth
    case also through the command line."""
    import traceback

    from comparing import recorded_compare

    from engine.backends.llama_cpp import Backend, BackendConfig
    from engine.errors import PonderError
    from engine.problems import clean_text
    from engine.run.export import export_session
    from engine.store import Store, import_session

    # The embedded model cut to 2 of its 30 blocks (tests/helpers/small_models.py): the same tokenizer and
    # chat template, so every text meets what it would meet, at a fifteenth of the prefill time.
    model = sys.argv[5]
    backend = Backend(model, BackendConfig(n_ctx=4096, n_seq_max=8))
    store = Store.open(work / "problems.db")
    again = Store.open(work / "again.db")
    for i, (kind, text) in enumerate(problem_texts(random.Random(seed), n)):
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        extra: dict[str, object] = {"kind": kind, "chars": len(text), "blank": not text.strip()}
        err = ""
        try:
            sid, runs, rec_err = recorded_compare(
                backend, store, text, ["best_of_n"], budget=1, prm="arithmetic", max_tokens=2
            )
            code = 0 if runs[0].status == "done" and not rec_err else 3
            err = runs[0].message
        except PonderError as e:
            code, err = 2, f"ponder: error: {e}"
        except Exception:
            code, err = 1, traceback.format_exc()
        if code == 0:
            try:
                exp = work / "p.json"
                exp.write_text(export_session(store, sid, "json"), encoding="utf-8")
                export_session(store, sid, "html")
                export_session(store, sid, "jsonl")
                back = import_session(again, exp)
                extra.update(
                    stored_ok=store.session(sid).problem == clean_text(text).strip(),
                    reimport_ok=again.session(back).problem == store.session(sid).problem,
                )
            except Exception:
                code, err = 1, traceback.format_exc()
        if i % 10 == 0:  # the command line too: its own checks, its own exit codes
            c, _, e = _cli(
                ["compare", text, "--strategies", "best_of_n", "--budget", "1", "--max-tokens", "2",
                 "--prm", "arithmetic", "--ctx", "4096", "--db", str(work / "cli.db"), "--model", model]
            )  # fmt: skip
            extra.update(cli_code=c, cli_stderr=e[-300:])
        _emit(i, kind, code, err, **extra)
        faulthandler.cancel_dump_traceback_later()


def run_db(seed: int, work: Path, n: int) -> None:
    good = Path(sys.argv[5])
    size = good.stat().st_size
    rng = random.Random(seed)
    for i in range(n):
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        flips = bit_flips(size, rng)
        target = work / f"flipped{i}.db"
        raw = bytearray(good.read_bytes())
        for off, bit in flips:
            raw[off] ^= 1 << bit
        target.write_bytes(bytes(raw))
        before = _digest(target)
        codes, errs = [], ""
        c, out, e = _cli(["sessions", "list", "--limit", "0", "--json", "--db", str(target)])
        codes.append(c)
        errs += e
        try:
            sid = json.loads(out)[0]["id"] if c == 0 else "nosuch"
        except (ValueError, IndexError, KeyError, TypeError):
            sid = "nosuch"
        for args in (["sessions", "show", sid], ["sessions", "export", sid, "--format", "html"]):
            c, _, e = _cli([*args, "--db", str(target)])
            codes.append(c)
            errs += e
        _emit(i, f"flips {flips}", max(codes), errs, codes=codes, unchanged=_digest(target) == before)
        faulthandler.cancel_dump_traceback_later()


def run_exports(seed: int, work: Path, n: int) -> None:
    good_json = Path(sys.argv[5]).read_text()
    good_jsonl = Path(sys.argv[6]).read_text()
    for i, (label, blob) in enumerate(export_mutations(good_json, good_jsonl, random.Random(seed), n)):
        faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
        target = work / f"export{i}.{'jsonl' if 'jsonl' in label else 'json'}"
        target.write_bytes(blob)
        before = _digest(target)
        db = work / f"import{i}.db"
        for stale in work.glob(f"import{i}.db*"):
            stale.unlink()
        code, out, err = _cli(["sessions", "import", str(target), "--db", str(db), "--json"])
        extra: dict[str, object] = {"unchanged": _digest(target) == before}
        if code == 0:
            sid = json.loads(out)["session_id"]
            c2, _, e2 = _cli(["sessions", "show", sid, "--db", str(db)])
            c3, _, e3 = _cli(["sessions", "export", sid, "--db", str(db), "--format", "html"])
            extra.update(show=c2, html=c3, err2=(e2 + e3)[-300:])
        _emit(i, label, code, err, **extra)
        faulthandler.cancel_dump_traceback_later()


GROUPS = {"gguf": run_gguf, "problems": run_problems, "db": run_db, "exports": run_exports}

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    group, seed, work, count = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    t0 = time.perf_counter()
    GROUPS[group](seed, work, count)
    print(json.dumps({"done": count, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    os._exit(0)  # skip interpreter teardown (llama.cpp's atexit) once every case has reported
