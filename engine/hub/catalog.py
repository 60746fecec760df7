"""What the catalog offers to get (its ``[model.hub]`` tables) and whether a model fits this machine,
counted with the policy or PRM beside it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.gguf_info import GGUFInfo
from engine.hub.listing import HubError
from engine.models import CatalogEntry, catalog_entry, estimate_memory, load_catalog

# --- the catalog's offers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A catalog entry that can be downloaded, at one quantization."""

    entry: CatalogEntry
    repo: str
    quant: str
    file: str
    quants: tuple[str, ...]

    @property
    def role(self) -> str:
        return role_of(self.entry)


def role_of(entry: CatalogEntry) -> str:
    """What a user picks a model for: policy, PRM, or thinking (a reasoning model for budget forcing)."""
    if "prm" in entry.roles:
        return "PRM"
    return "thinking" if entry.settings.get("thinking") else "policy"


def role_of_file(name: str, catalog: list[CatalogEntry] | None = None) -> str | None:
    """The role of a file by the catalog's file-name globs (a file of a repository the user looked
    up), or None when no entry knows it."""
    entry = catalog_entry(Path(name), load_catalog() if catalog is None else catalog)
    return role_of(entry) if entry is not None else None


def hub_spec(entry: CatalogEntry) -> dict[str, Any] | None:
    spec = entry.settings.get("hub")
    return spec if isinstance(spec, dict) and spec.get("repo") and spec.get("file") else None


def offer(entry: CatalogEntry, quant: str | None = None) -> Offer | None:
    spec = hub_spec(entry)
    if spec is None:
        return None
    quants = tuple(str(q) for q in spec.get("quants", [])) or ("",)
    q = quant if quant is not None else quants[0]
    if q not in quants:
        raise HubError(f"{entry.id} comes in {', '.join(quants)}, not {q}.")
    return Offer(entry, str(spec["repo"]), q, str(spec["file"]).replace("{quant}", q), quants)


def catalog_offers(catalog: list[CatalogEntry] | None = None) -> list[Offer]:
    out = []
    for e in load_catalog() if catalog is None else catalog:
        o = offer(e)
        if o is not None:
            out.append(o)
    return out


def find_offer(repo: str, catalog: list[CatalogEntry] | None = None) -> Offer | None:
    """The catalog's entry for a repository, so ``--get REPO`` alone takes its default quantization."""
    for o in catalog_offers(catalog):
        if o.repo.lower() == repo.lower():
            return o
    return None


# --- the fit on this machine ------------------------------------------------------------------------


@dataclass(frozen=True)
class Machine:
    ram_available: int
    gpu_free: int  # over every GPU llama.cpp sees; 0 on a CPU build


def this_machine() -> Machine:
    avail = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if not avail:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 0
    gpu = 0
    try:
        from engine.llama_lib import build_info

        b = build_info()
        if b.gpu_offload:
            gpu = sum(d.memory_free for d in b.devices if d.type in ("GPU", "iGPU"))
    except Exception:  # noqa: BLE001 - no llama.cpp here: count no GPU
        gpu = 0
    return Machine(avail, gpu)


HEADROOM = 0.85  # of the memory available: the OS, the app and the KV cache's growth need the rest


def fit(need: int, machine: Machine) -> str:
    """fits | needs GPU offload | too big, for ``need`` bytes (policy and PRM together)."""
    ram = int(machine.ram_available * HEADROOM)
    if need <= ram:
        return "fits"
    if need <= ram + int(machine.gpu_free * HEADROOM):
        return "needs GPU offload"
    return "too big"


def need_bytes(
    size: int | None, info: GGUFInfo | None, n_ctx: int, partner: GGUFInfo | None = None
) -> int | None:
    """What a model needs loaded (weights and an f16 KV cache of ``n_ctx`` from its header, else its
    file size alone), plus ``partner``'s (the policy beside a PRM, or the PRM beside a policy)."""
    if info is not None:  # (the header is the first part's: a split model weighs all its parts)
        m = estimate_memory(info, n_ctx, 0)
        own = (size if size is not None else m["weights"]) + m["kv_cache"]
    elif size is not None:
        own = size
    else:
        return None
    if partner is not None:
        p = estimate_memory(partner, n_ctx, 0)
        own += p["weights"] + p["kv_cache"]
    return own
