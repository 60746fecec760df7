"""``ponder models``: the GGUF models Ponder can see, the folders and files it remembers, and models
to get from the Hugging Face Hub (``--catalog`` lists what the catalog offers with its size and fit
on this machine; ``--get REPO`` downloads one into the Hub's cache, where discovery lists it)."""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.cli.options import print_json
from engine.errors import PonderError
from engine.gguf_info import human_params, human_size
from engine.models import add_model, discover, remove_model_dir, remove_model_file

DEFAULT_CTX = 16384  # the context the memory estimate counts a KV cache for (the app's default)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", action="append", default=[], help="also scan this folder (repeatable)")
    p.add_argument(
        "--add", metavar="PATH", help="remember a folder to scan, or one GGUF file (the app sees it too)"
    )
    p.add_argument("--remove", metavar="PATH", help="forget an added folder or file (nothing is deleted)")
    p.add_argument("--only", action="store_true", help="scan only --dir folders (and the embedded model)")
    hub = p.add_argument_group(
        "getting models from the Hugging Face Hub (HF_ENDPOINT and HF_TOKEN are honoured; nothing is stored)"
    )
    hub.add_argument(
        "--catalog",
        action="store_true",
        help="list the policies and PRMs the catalog offers, with size, role and fit on this machine",
    )
    hub.add_argument(
        "--get",
        metavar="REPO",
        help="download a GGUF from this Hub repository into the Hub's cache (resumes a partial download)",
    )
    hub.add_argument("--file", metavar="NAME", help="with --get: the file to download")
    hub.add_argument("--quant", metavar="Q", help="with --get: the quantization to download, e.g. Q4_K_M")
    hub.add_argument("--revision", metavar="REV", help="with --get: a branch, tag or commit (default main)")
    hub.add_argument(
        "--ctx",
        type=int,
        default=DEFAULT_CTX,
        metavar="N",
        help=f"context whose KV cache the memory estimate counts (default {DEFAULT_CTX})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    if (args.file or args.quant or args.revision) and not args.get:
        raise PonderError("--file, --quant and --revision go with --get REPO.")
    if args.get:
        return _get(args)
    if args.catalog:
        return _catalog(args)
    if args.add:
        kind, p = add_model(args.add)
        if not args.json:
            print(f"Added {p}; it will be scanned from now on." if kind == "folder" else f"Added {p}.")
    if args.remove:
        remove_model_dir(args.remove)
        remove_model_file(args.remove)
        if not args.json:
            print(f"Removed {args.remove} from the list (the files stay where they are).")
    entries = discover(extra_dirs=args.dir, include_default_locations=not args.only)
    if args.json:
        print_json({"models": [e.as_dict() for e in entries]})
        return 0
    if not entries:
        print("No GGUF models found. Put .gguf files in models/ or add a folder with --add DIR.")
        return 0
    for e in entries:
        print(f"{e.path}  [{e.source}]")
        if e.info is not None:
            i = e.info
            ctx = f"{i.context_length:,}" if i.context_length else "?"
            print(
                f"    {i.architecture}, {human_params(i.n_params)} parameters, {i.quantization}, "
                f"{human_size(i.file_size)}, context {ctx}, "
                f"chat template: {'yes' if i.has_chat_template else 'no'}"
                + (f", roles: {', '.join(e.roles)}" if e.roles else "")
            )
        else:
            print(f"    ERROR: {e.error}")
    broken = sum(not e.ok for e in entries)
    print(f"\n{len(entries)} model file(s), {broken} unreadable.")
    return 0


# --- the Hub ----------------------------------------------------------------------------------------


def _get(args: argparse.Namespace) -> int:
    from engine import hub

    repo = hub.check_repo_id(args.get)
    listing = hub.list_repo(repo, args.revision)
    offer = hub.find_offer(repo)
    if args.file or args.quant:
        model = hub.pick(listing, file=args.file, quant=args.quant)
    elif offer is not None:  # a catalog repository: its default quantization
        model = hub.pick(listing, file=offer.file)
    else:
        model = hub.pick(listing)
    if listing.gated and not hub.has_token():
        raise PonderError(hub.gated_line(repo))
    have = hub.partial_bytes(model)
    size = human_size(model.size) if model.size is not None else "size unknown"
    parts = f" in {len(model.parts)} parts" if len(model.parts) > 1 else ""
    if hub.cached(model) is None:
        resumed = f", resuming at {human_size(have)}" if have else ""
        print(
            f"Downloading {repo}/{model.file} ({size}{parts}{resumed}) into {hub.hf_cache_dir()}",
            file=sys.stderr,
        )
    from engine.cli.progress import DownloadBar

    bar = DownloadBar(model.name, sys.stderr)
    try:
        with bar:
            path = hub.download(model, on_progress=bar.update)
    except KeyboardInterrupt:
        print(
            f"\nponder: stopped; {human_size(hub.partial_bytes(model))} kept, run it again to resume",
            file=sys.stderr,
        )
        return 130
    roles = _roles_of(path)
    if args.json:
        print_json({"path": str(path), "repo": repo, "file": model.file, "size": model.size, "roles": roles})
    else:
        print(
            f"{path}\n    {size}, sha256 checked; roles: {', '.join(roles) or 'policy'}. "
            "`ponder models` lists it."
        )
    return 0


def _roles_of(path: Any) -> list[str]:
    from engine.models import describe, load_catalog

    return list(describe(path, "huggingface", load_catalog()).roles)


def _catalog(args: argparse.Namespace) -> int:
    """Each catalog entry with a Hub source: its file at the default quantization, size from the
    Hub's listing (or 'offline'), role, and whether it fits here (file size alone; with ``--ctx`` and
    a header read after download, the model bar gives the full estimate)."""
    from engine import hub
    from engine.gguf_info import read_gguf
    from engine.models import default_model_path

    machine = hub.this_machine()
    try:
        policy = read_gguf(default_model_path())
    except PonderError:
        policy = None

    def row_of(o: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "id": o.entry.id,
            "role": o.role,
            "repo": o.repo,
            "file": o.file,
            "quants": list(o.quants),
            "size": None,
            "fit": None,
            "downloaded": False,
        }
        try:
            model = hub.pick(hub.list_repo(o.repo), file=o.file)
            row["size"] = model.size
            row["downloaded"] = hub.cached(model) is not None
            need = hub.need_bytes(model.size, None, args.ctx, policy if o.role == "PRM" else None)
            row["fit"] = hub.fit(need, machine) if need is not None else None
        except PonderError as e:
            row["error"] = str(e)
        return row

    with ThreadPoolExecutor(max_workers=6) as pool:  # one listing per repository, several at once
        rows = list(pool.map(row_of, hub.catalog_offers()))
    if not args.json:
        for row in rows:
            _print_offer(row)
    if args.json:
        print_json({"catalog": rows, "ram_available": machine.ram_available, "gpu_free": machine.gpu_free})
    else:
        print(
            f"\n{len(rows)} models. Memory here: {human_size(machine.ram_available)} RAM available"
            + (f", {human_size(machine.gpu_free)} GPU free" if machine.gpu_free else ", no GPU offload")
            + ". Get one with: ponder models --get REPO [--quant Q]"
        )
    return 0


def _print_offer(row: dict[str, Any]) -> None:
    size = human_size(row["size"]) if row["size"] is not None else "?"
    state = "downloaded" if row["downloaded"] else (row["fit"] or "")
    print(
        f"{row['id']:<34} {row['role']:<9} {size:>9}  {state:<18} {row['repo']}  ({', '.join(row['quants'])})"
    )
    if row.get("error"):
        print(f"    {row['error']}")
