"""A model into the Hub's cache: bytes and rate reported, resumed from ``blobs/<sha256>.incomplete``
after a stop or a kill, cancellable, and checked (size, sha256, GGUF header) before it is linked at
``snapshots/<commit>/<file>`` where discovery looks."""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from engine.errors import ModelLoadError
from engine.gguf_info import human_size, read_gguf
from engine.hub.listing import (
    _SHA256,
    CHUNK,
    RETRIES,
    DownloadCancelled,
    HubError,
    HubModel,
    RemoteFile,
    _headers,
    _hub_failure,
    _refuse_offline,
    _status_failure,
    _storage,
    _url,
)
from engine.models import hf_cache_dir

# --- download ---------------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where a download stands, for a progress bar: bytes over all parts, and the recent rate."""

    file: str
    done: int
    total: int | None
    rate: float  # bytes per second over the last few seconds
    resumed_from: int = 0  # bytes already on disk when this run started
    phase: str = "downloading"  # downloading | checking | done

    @property
    def eta(self) -> float | None:
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.done, 0) / self.rate


@dataclass
class _Meter:
    on_progress: Callable[[Progress], None] | None
    progress: Progress
    samples: deque = field(default_factory=lambda: deque(maxlen=64))
    last: float = 0.0

    def add(self, n: int) -> None:
        p = self.progress
        p.done += n
        now = time.monotonic()
        self.samples.append((now, p.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 3.0:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        if now > t0:
            p.rate = (p.done - b0) / (now - t0)
        if self.on_progress is not None and now - self.last >= 0.1:
            self.last = now
            self.on_progress(p)

    def skip(self, n: int) -> None:
        """Bytes that were already on disk: counted as done, not as speed."""
        self.progress.done += n
        self.samples.clear()

    def say(self, phase: str) -> None:
        self.progress.phase = phase
        if self.on_progress is not None:
            self.on_progress(self.progress)


def snapshot_path(model: HubModel, part: RemoteFile | None = None) -> Path:
    return _storage(model.repo) / "snapshots" / model.commit / (part or model.parts[0]).path


def cached(model: HubModel) -> Path | None:
    """The model's first part in the cache when every part is there whole, else None."""
    for part in model.parts:
        p = snapshot_path(model, part)
        try:
            if not p.is_file() or (part.size is not None and p.stat().st_size != part.size):
                return None
        except OSError:
            return None
    return snapshot_path(model)


def partial_bytes(model: HubModel) -> int:
    """Bytes of this model already on disk: whole parts and partial files."""
    n = 0
    for part in model.parts:
        blobs = _storage(model.repo) / "blobs"
        key = part.sha256 or ""
        if key and (blobs / key).is_file():
            n += (blobs / key).stat().st_size
        elif key and (blobs / f"{key}.incomplete").is_file():
            n += (blobs / f"{key}.incomplete").stat().st_size
    return n


def download(
    model: HubModel,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Download every part of ``model`` into the Hub cache; the path of its first part. Resumes a
    partial file; checks each part's size, sha256 and GGUF header before it is linked where
    discovery looks. Raises :class:`DownloadCancelled` (partial kept) or :class:`HubError`."""
    _refuse_offline()
    total = model.size
    meter = _Meter(on_progress, Progress(model.name, 0, total, 0.0))
    done = cached(model)
    if done is not None:
        meter.skip(total or 0)
        meter.say("done")
        return done
    _check_space(model)
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30, read=60)) as client:
        for part in model.parts:
            _download_part(model, part, client, meter, cancel)
    meter.say("done")
    return snapshot_path(model)


def _check_space(model: HubModel) -> None:
    blobs = _storage(model.repo) / "blobs"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(blobs).free
    except OSError as e:
        raise HubError(f"Cannot write to the Hub cache {hf_cache_dir()}: {e.strerror or e}.") from None
    if model.size is not None:
        need = model.size - partial_bytes(model)
        if need > free:
            raise HubError(
                f"{model.name} needs {human_size(need)} more on disk but {blobs.parent.parent} has "
                f"{human_size(free)} free: free some space (or set HF_HUB_CACHE to a larger disk)."
            )


def _download_part(
    model: HubModel, part: RemoteFile, client: httpx.Client, meter: _Meter, cancel: threading.Event | None
) -> None:
    from filelock import FileLock, Timeout

    storage = _storage(model.repo)
    pointer = snapshot_path(model, part)
    key = part.sha256 or _etag_of(client, model, part)
    blob = storage / "blobs" / key
    if blob.is_file() and (part.size is None or blob.stat().st_size == part.size):
        meter.skip(blob.stat().st_size)  # the same bytes under another revision or name
        _link(storage, model, part, blob, pointer)
        return
    locks = hf_cache_dir() / ".locks" / storage.name
    locks.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(locks / f"{key}.lock"), timeout=0):
            partial = blob.with_name(f"{key}.incomplete")
            _fetch(model, part, client, partial, meter, cancel)
            _verify(model, part, partial, meter)
            os.replace(partial, blob)
    except Timeout:
        raise HubError(
            f"{model.name} is being downloaded by another program right now "
            f"(the lock {locks / key}.lock is held)."
        ) from None
    _link(storage, model, part, blob, pointer)


def _etag_of(client: httpx.Client, model: HubModel, part: RemoteFile) -> str:
    """A file the listing gave no sha256 for (not in LFS): its ETag names its blob, as in huggingface_hub."""
    try:
        r = client.head(_url(model, part), headers=_headers(), follow_redirects=False)
    except httpx.HTTPError as e:
        raise _hub_failure(e, model.repo) from None
    if r.status_code >= 400:
        raise _status_failure(r, model, part)
    etag = (
        (r.headers.get("X-Linked-Etag") or r.headers.get("ETag") or "")
        .strip('"')
        .removeprefix("W/")
        .strip('"')
    )
    if not etag:
        raise HubError(f"The Hub gave no ETag for {model.repo}/{part.path}; cannot place it in the cache.")
    return etag


def _fetch(
    model: HubModel,
    part: RemoteFile,
    client: httpx.Client,
    partial: Path,
    meter: _Meter,
    cancel: threading.Event | None,
) -> None:
    """Bytes into ``partial`` from where it ends, over dropped connections (each retry resumes)."""
    have = partial.stat().st_size if partial.exists() else 0
    if part.size is not None and have > part.size:
        partial.unlink()  # longer than the file: not a prefix of it
        have = 0
    meter.progress.resumed_from += have
    meter.skip(have)
    tries = 0
    while part.size is None or have < part.size:
        headers = _headers()
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with client.stream("GET", _url(model, part), headers=headers) as r:
                if r.status_code == 416 and have and part.size is None:
                    return  # whole already
                if r.status_code >= 400:
                    raise _status_failure(r, model, part)
                mode = "ab"
                if have and r.status_code == 200:  # the server ignored the range: start over
                    meter.skip(-have)
                    have, mode = 0, "wb"
                chunks = r.iter_bytes(CHUNK)
                if have == 0:  # a file that does not start as a GGUF is refused before a byte is kept
                    first = next(chunks, b"")
                    if first and not first.startswith(b"GGUF"[: len(first)]):
                        partial.unlink(missing_ok=True)
                        raise HubError(
                            f"{model.repo}/{part.path} is not a usable GGUF (not a GGUF file: it "
                            f"starts with {first[:4]!r}); nothing was kept."
                        )
                    chunks = itertools.chain([first], chunks)
                try:
                    with open(partial, mode) as f:
                        for chunk in chunks:
                            if cancel is not None and cancel.is_set():
                                raise DownloadCancelled(
                                    f"Stopped {model.name} at {human_size(have)}; "
                                    "it resumes from there next time."
                                )
                            f.write(chunk)
                            have += len(chunk)
                            meter.add(len(chunk))
                        f.flush()
                        os.fsync(f.fileno())
                except OSError as e:
                    raise _disk_failure(e, model, partial, have) from None
            if part.size is None:
                return
            if have < part.size:
                raise httpx.RemoteProtocolError("the connection closed before the file's end")
        except httpx.HTTPError as e:
            tries += 1
            if tries > RETRIES:
                raise HubError(
                    f"The download of {model.name} kept failing ({e or type(e).__name__}); "
                    f"{human_size(have)} kept, run it again to resume."
                ) from None
            time.sleep(min(2.0 * tries, 6.0))


def _disk_failure(e: OSError, model: HubModel, partial: Path, have: int) -> HubError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return HubError(
            f"The disk filled while downloading {model.name}: {human_size(have)} kept in {partial.parent}; "
            "free some space and run it again to resume."
        )
    return HubError(f"Cannot write {partial}: {e.strerror or e}.")


def _verify(model: HubModel, part: RemoteFile, partial: Path, meter: _Meter) -> None:
    """Size, sha256 and GGUF header of a finished part; a part that fails is deleted (a bad copy
    must not be resumed from) and never linked where discovery looks."""
    meter.say("checking")
    size = partial.stat().st_size
    if part.size is not None and size != part.size:
        partial.unlink(missing_ok=True)
        raise HubError(f"{model.name} arrived with {size:,} bytes, not {part.size:,}; deleted, try again.")
    if part.sha256 and _SHA256.match(part.sha256):
        h = hashlib.sha256()
        with open(partial, "rb") as f:
            while block := f.read(CHUNK * 8):
                h.update(block)
        if h.hexdigest() != part.sha256:
            partial.unlink(missing_ok=True)
            raise HubError(
                f"{model.name} failed its checksum (sha256 {h.hexdigest()[:12]}…, the Hub lists "
                f"{part.sha256[:12]}…): the file was deleted; try again."
            )
    try:
        read_gguf(partial)
    except ModelLoadError as e:
        partial.unlink(missing_ok=True)
        raise HubError(f"{model.repo}/{part.path} is not a usable GGUF ({e.reason}); deleted.") from None


def _link(storage: Path, model: HubModel, part: RemoteFile, blob: Path, pointer: Path) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<sha256>, and refs/<branch> -> commit, as
    huggingface_hub writes them."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(blob, pointer.parent), tmp)
    except OSError:  # no symlinks (some Windows set-ups): a copy, as huggingface_hub falls back to
        shutil.copyfile(blob, tmp)
    os.replace(tmp, pointer)
    if model.revision != model.commit:
        refs = storage / "refs" / model.revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        refs.write_text(model.commit, encoding="ascii")
