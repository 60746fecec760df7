"""The Hub's side: where it is, what a repository holds (its GGUF models, split ones as one), which
file a user means, a model's header read before download, and one clear line for every failure."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from engine.errors import ModelLoadError, PonderError, TruncatedGGUFError
from engine.gguf_info import GGUFInfo, human_size, read_gguf_header
from engine.models import hf_cache_dir

DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK = 1 << 20
RETRIES = 5  # dropped connections retried per file, each resuming where the last stopped
HEADER_READS = (4 << 20, 16 << 20, 64 << 20)  # a remote header is read in growing prefixes
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
# Quantization names as GGUF files carry them (…-Q4_K_M.gguf, ….Q8_0.gguf, …-q4_k_m.gguf, …-BF16.gguf)
_QUANT = re.compile(
    r"(?:^|[-_.])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32|FP16)(?=[-_.](?:\d{5}-of-\d{5}\.)?gguf$|\.gguf$)",
    re.IGNORECASE,
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubError(PonderError):
    """A Hub request or download failed; the message is one line for a person."""


class DownloadCancelled(HubError):
    """The user stopped a download; its partial file is kept and resumed next time."""


# --- where ------------------------------------------------------------------------------------------


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def has_token() -> bool:
    return bool(_token())


def _token() -> str | None:
    """HF_TOKEN, or what ``hf auth login`` saved: huggingface_hub's own lookup; never stored here."""
    from huggingface_hub import get_token

    return get_token()


def _headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name="ponder")


def _storage(repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return hf_cache_dir() / repo_folder_name(repo_id=repo, repo_type="model")


# --- what there is to get ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    path: str  # in the repository
    size: int | None
    sha256: str | None  # the LFS object id: the file's sha256


@dataclass(frozen=True)
class HubModel:
    """One model to download: a GGUF file, or the parts of a split one (…-00001-of-00003.gguf)."""

    repo: str
    commit: str  # the revision listed, as a commit hash (downloads of it are reproducible)
    parts: tuple[RemoteFile, ...]
    revision: str = "main"

    @property
    def file(self) -> str:
        return self.parts[0].path

    @property
    def name(self) -> str:
        return self.file.rsplit("/", 1)[-1]

    @property
    def size(self) -> int | None:
        sizes = [p.size for p in self.parts]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    @property
    def quant(self) -> str | None:
        return quant_of(self.name)


@dataclass(frozen=True)
class Listing:
    repo: str
    commit: str
    revision: str
    files: tuple[RemoteFile, ...]
    gated: bool = False

    def ggufs(self) -> list[HubModel]:
        """The repository's GGUF models: single files, and split ones as one model (its first part)."""
        out = []
        by_path = {f.path: f for f in self.files}
        for f in self.files:
            if not f.path.lower().endswith(".gguf"):
                continue
            m = _SPLIT.search(f.path)
            if m is None:
                out.append(HubModel(self.repo, self.commit, (f,), self.revision))
            elif m.group(1) == "00001":
                n = int(m.group(2))
                stem = f.path[: m.start()]
                names = [f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
                parts = tuple(by_path[p] for p in names if p in by_path)
                if len(parts) == n:
                    out.append(HubModel(self.repo, self.commit, parts, self.revision))
        return out


def quant_of(name: str) -> str | None:
    m = _QUANT.search(name)
    return m.group(1).upper() if m else None


def _network_error(e: BaseException) -> bool:
    """httpx's (huggingface_hub 1.x) and httpx2's (2.x) transport errors, named alike."""
    return any(c.__name__ in ("TransportError", "RequestError") for c in type(e).__mro__) or isinstance(
        e, ConnectionError | TimeoutError
    )


def _refuse_offline() -> None:
    if _offline():
        raise HubError("HF_HUB_OFFLINE is set: Ponder does not reach the Hub (unset it to download).")


def _hub_failure(e: BaseException, repo: str, what: str = "") -> HubError:
    """One line for a person from huggingface_hub's errors and the network's."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return HubError(gated_line(repo))
    if isinstance(e, RepositoryNotFoundError):
        return HubError(f"No repository {repo} on {endpoint()} (check the id; a private one needs HF_TOKEN).")
    if isinstance(e, RevisionNotFoundError):
        return HubError(f"{repo} has no revision {what or '(as asked)'}.")
    if isinstance(e, RemoteEntryNotFoundError):
        return HubError(f"{repo} has no file {what}.")
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, "response", None), "status_code", "?")
        return HubError(f"The Hub answered HTTP {status} for {repo}: {str(e).splitlines()[0][:200]}")
    if _network_error(e):
        return HubError(f"Cannot reach the Hugging Face Hub at {endpoint()}: {e or type(e).__name__}.")
    return HubError(f"Reading {repo} from the Hub failed: {type(e).__name__}: {e}")


def gated_line(repo: str) -> str:
    if _token():
        return (
            f"{repo} is gated and your token has no access yet: accept its terms on its Hub page, "
            "then try again."
        )
    return (
        f"{repo} is gated: accept its terms on its Hub page and set HF_TOKEN to a token of that "
        "account (Ponder never stores it)."
    )


def check_repo_id(repo: str) -> str:
    repo = repo.strip().strip("/")
    if repo.startswith(("http://", "https://")):
        repo = repo.split("://", 1)[1].split("/", 1)[-1]  # a pasted page address
        repo = "/".join(repo.split("/")[:2])
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo) or ".." in repo:
        raise HubError(
            f"{repo!r} is not a Hub repository id (owner/name, e.g. bartowski/Llama-3.2-1B-Instruct-GGUF)."
        )
    return repo


def list_repo(repo: str, revision: str | None = None) -> Listing:
    """The repository's files with their sizes and sha256 (one request)."""
    repo = check_repo_id(repo)
    _refuse_offline()
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, files_metadata=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one line
        raise _hub_failure(e, repo, revision or "") from None
    files = []
    for s in info.siblings or []:
        sha = getattr(s.lfs, "sha256", None) if s.lfs is not None else None
        files.append(
            RemoteFile(s.rfilename, s.size if s.size is not None else getattr(s.lfs, "size", None), sha)
        )
    return Listing(repo, info.sha or (revision or "main"), revision or "main", tuple(files), bool(info.gated))


def pick(listing: Listing, file: str | None = None, quant: str | None = None) -> HubModel:
    """The model ``file`` names (or the one of quantization ``quant``, or the only GGUF there is)."""
    models = listing.ggufs()
    shown = ", ".join(m.name for m in models[:12]) + (" …" if len(models) > 12 else "")
    if file:
        if not file.lower().endswith(".gguf"):
            there = any(f.path == file for f in listing.files)
            raise HubError(
                f"{file} is not a GGUF file ({'it is in' if there else 'and not in'} {listing.repo}); "
                f"Ponder runs GGUF models. GGUFs there: {shown or 'none'}."
            )
        for m in models:
            if file in (m.file, m.name) or any(file == p.path for p in m.parts):
                return m
        raise HubError(f"{listing.repo} has no file {file}. GGUFs there: {shown or 'none'}.")
    if not models:
        raise HubError(
            f"{listing.repo} holds no GGUF file (Ponder runs GGUF models; look for a -GGUF repository)."
        )
    if quant:
        hits = [m for m in models if (m.quant or "").upper() == quant.upper()]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            quants = sorted({m.quant for m in models if m.quant})
            raise HubError(f"{listing.repo} has no {quant} GGUF; it has: {', '.join(quants) or shown}.")
        names = ", ".join(m.name for m in hits)
        raise HubError(f"{listing.repo} has several {quant} GGUFs ({names}): name one with --file.")
    if len(models) == 1:
        return models[0]
    raise HubError(f"{listing.repo} has {len(models)} GGUFs; choose one with --file or --quant: {shown}.")


# --- a model's header, before download --------------------------------------------------------------


def _url(model: HubModel, part: RemoteFile) -> str:
    from urllib.parse import quote

    return f"{endpoint()}/{model.repo}/resolve/{model.commit}/{quote(part.path)}"


def remote_header(model: HubModel, client: httpx.Client | None = None) -> GGUFInfo:
    """The GGUF header of the model's first part, read with HTTP Range requests in growing prefixes
    (a few MB: the vocabulary is in it), so its layers, parameters and KV cache size are known
    before the download."""
    _refuse_offline()
    part = model.parts[0]
    if part.size is None:
        raise HubError(f"The Hub did not say how large {model.name} is.")
    own = client is None
    c = client or httpx.Client(follow_redirects=True, timeout=30)
    try:
        for n in HEADER_READS:
            end = min(n, part.size) - 1
            r = c.get(_url(model, part), headers={**_headers(), "Range": f"bytes=0-{end}"})
            if r.status_code >= 400:
                raise _status_failure(r, model, part)
            data = r.content[: end + 1]
            try:
                return read_gguf_header(io.BytesIO(data), f"{model.repo}/{part.path}", part.size)
            except TruncatedGGUFError:
                if end + 1 >= part.size:
                    raise
                continue
        raise HubError(f"{model.name}'s header is longer than {human_size(HEADER_READS[-1])}.")
    except ModelLoadError as e:
        raise HubError(f"{model.repo}/{model.file} is not a usable GGUF: {e.reason}") from None
    except httpx.HTTPError as e:
        raise _hub_failure(e, model.repo) from None
    finally:
        if own:
            c.close()


def _status_failure(r: httpx.Response, model: HubModel, part: RemoteFile) -> HubError:
    code = r.headers.get("X-Error-Code", "")
    if code == "GatedRepo" or (r.status_code in (401, 403) and code != "RepoNotFound"):
        if r.status_code == 401 and _token() and code != "GatedRepo":
            return HubError(f"The Hub refused HF_TOKEN for {model.repo} (HTTP 401): check the token.")
        return HubError(gated_line(model.repo))
    if r.status_code == 404:
        if code == "RepoNotFound":
            return HubError(f"No repository {model.repo} on {endpoint()}.")
        return HubError(f"{model.repo} has no file {part.path} (at {model.commit[:12]}).")
    return HubError(f"The Hub answered HTTP {r.status_code} for {model.repo}/{part.path}.")
