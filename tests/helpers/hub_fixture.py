"""A small HTTP server that answers the Hugging Face Hub's file API for fixture repositories, reached
through ``HF_ENDPOINT``: ``GET /api/models/{repo}[/revision/{rev}]?blobs=true`` (the listing with
sizes and LFS sha256) and ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (with Range requests,
``X-Repo-Commit``, ``ETag``, and the Hub's ``X-Error-Code`` on 401/404). It serves files; Ponder's
own download, resume, checksum and cache code runs for real against it.

Knobs a test sets: ``rate`` (bytes per second, to kill a download halfway), a gated repository that
wants a token, and a repository whose listed sha256 does not match its bytes. Every request is
recorded in ``requests`` as ``(method, path, Range header)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class FixtureRepo:
    files: dict[str, Path | bytes]  # path in the repo -> a file on disk or the bytes
    gated: bool = False
    token: str | None = None  # the token a gated repository accepts
    wrong_sha: set[str] = field(default_factory=set)  # files whose listed sha256 is not theirs

    @property
    def commit(self) -> str:
        return hashlib.sha1(json.dumps(sorted(self.files)).encode()).hexdigest()


def _size(src: Path | bytes) -> int:
    return len(src) if isinstance(src, bytes) else src.stat().st_size


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def _sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    st = src.stat()
    key = (str(src), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(src, "rb") as f:
            while b := f.read(1 << 22):
                h.update(b)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


class HubFixture:
    def __init__(self, repos: dict[str, FixtureRepo], rate: float | None = None) -> None:
        self.repos = repos
        self.rate = rate
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                fixture._handle(self, head=False)

            def do_HEAD(self):  # noqa: N802
                fixture._handle(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubFixture:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ranges(self, path_end: str) -> list[str | None]:
        """The Range headers of the GETs of files whose path ends with ``path_end``."""
        with self._lock:
            return [
                r for m, p, r in self.requests if m == "GET" and p.endswith(path_end) and "/resolve/" in p
            ]

    # --- the API -------------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        try:
            if path.startswith("/api/models/"):
                self._info(h, path.removeprefix("/api/models/"))
            elif "/resolve/" in path:
                self._resolve(h, path.lstrip("/"), head)
            else:
                self._error(h, 404, "EntryNotFound", "no such route")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a killed download)

    def _error(self, h, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _repo(self, h, repo_id: str) -> FixtureRepo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 401, "RepoNotFound", "Repository not found")  # as the Hub answers
        return repo

    def _info(self, h, rest: str) -> None:
        repo_id, _, rev = rest.partition("/revision/")
        repo = self._repo(h, repo_id.strip("/"))
        if repo is None:
            return
        if rev and rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        siblings = []
        for name, src in sorted(repo.files.items()):
            sha = _sha256(src)
            if name in repo.wrong_sha:
                sha = hashlib.sha256(b"not these bytes").hexdigest()
            siblings.append(
                {
                    "rfilename": name,
                    "size": _size(src),
                    "blobId": hashlib.sha1(name.encode()).hexdigest(),
                    "lfs": {"size": _size(src), "sha256": sha, "pointerSize": 134},
                }
            )
        body = json.dumps(
            {
                "id": repo_id.strip("/"),
                "sha": repo.commit,
                "private": False,
                "gated": "auto" if repo.gated else False,
                "siblings": siblings,
            }
        ).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _resolve(self, h, path: str, head: bool) -> None:
        repo_id, _, rest = path.partition("/resolve/")
        repo = self._repo(h, repo_id)
        if repo is None:
            return
        rev, _, name = rest.partition("/")
        if rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return
        if repo.gated and h.headers.get("Authorization") != f"Bearer {repo.token}":
            self._error(h, 401, "GatedRepo", "Access to this model is restricted")
            return
        src = repo.files.get(name)
        if src is None:
            self._error(h, 404, "EntryNotFound", f"{name} does not exist")
            return
        size = _size(src)
        start, end, status = 0, size - 1, 200
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng.removeprefix("bytes=").partition("-")
            start = int(a or 0)
            end = min(int(b), size - 1) if b else size - 1
            if start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            status = 206
        h.send_response(status)
        h.send_header("Content-Length", str(end - start + 1))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{_sha256(src)}"')
        h.send_header("X-Repo-Commit", repo.commit)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head:
            return
        self._send(h, src, start, end + 1)

    def _send(self, h, src: Path | bytes, start: int, stop: int) -> None:
        step = 1 << 18
        t0, sent = time.monotonic(), 0
        f = None if isinstance(src, bytes) else open(src, "rb")
        try:
            if f is not None:
                f.seek(start)
            pos = start
            while pos < stop:
                n = min(step, stop - pos)
                chunk = src[pos : pos + n] if isinstance(src, bytes) else f.read(n)
                h.wfile.write(chunk)
                pos += n
                sent += n
                if self.rate:
                    ahead = sent / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        finally:
            if f is not None:
                f.close()


def smol_repo(model_path: str | os.PathLike[str]) -> FixtureRepo:
    """``fixture/smol``: the embedded model's GGUF and a tiny second file, as in the issue."""
    return FixtureRepo(
        files={
            "SmolLM2-135M-Instruct.Q4_1.gguf": Path(model_path),
            "README.md": b"# smol\nThe embedded SmolLM2-135M-Instruct, served by the tests' Hub fixture.\n",
        }
    )


def tiny_gguf(path: str | os.PathLike[str], name: str = "tiny", n_layer: int = 2) -> Path:
    """A small whole GGUF (a header a reader accepts, a few KB of tensors): for a second file, a
    PRM-named file, or a checksum test, where no model is run."""
    import gguf
    import numpy as np

    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_name(name)
    w.add_block_count(n_layer)
    w.add_context_length(2048)
    w.add_embedding_length(64)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_tensor("token_embd.weight", np.zeros((32, 64), dtype=np.float32))
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
