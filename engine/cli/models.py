"""``ponder models``: the GGUF models Ponder can see, and the folders and files it remembers."""

from __future__ import annotations

import argparse

from engine.cli.options import print_json
from engine.gguf_info import human_params, human_size
from engine.models import add_model, discover, remove_model_dir, remove_model_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", action="append", default=[], help="also scan this folder (repeatable)")
    p.add_argument(
        "--add", metavar="PATH", help="remember a folder to scan, or one GGUF file (the app sees it too)"
    )
    p.add_argument("--remove", metavar="PATH", help="forget an added folder or file (nothing is deleted)")
    p.add_argument("--only", action="store_true", help="scan only --dir folders (and the embedded model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
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
