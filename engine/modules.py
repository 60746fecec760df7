"""Importing every module of a package folder: how the registries (strategies, PRM kinds, dialects,
selectors) find the extensions that register themselves."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from pathlib import Path


def import_all(folder: Path, package: str, skip: Iterable[str] = ()) -> None:
    """Import each module (not subpackage) in ``folder`` as ``package.NAME``, except ``skip``."""
    left_out = set(skip)
    for m in pkgutil.iter_modules([str(folder)]):
        if not m.ispkg and m.name not in left_out:
            importlib.import_module(f"{package}.{m.name}")
