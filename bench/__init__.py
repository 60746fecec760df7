"""Ponder's benchmarks, outside the product (as napari keeps its ``benchmarks/``): they drive the
engine and the app and report figures; ``engine`` and ``gui`` never import them (an import-linter
contract). ``ponder bench`` and ``ponder screenshot`` reach them through the CLI's table of commands,
by module path (:mod:`bench.cli`, :mod:`bench.screenshot`).

* :mod:`bench.backend` — the batched backend against a naive ``Llama.create_completion`` loop;
* :mod:`bench.compare` — strategies side by side against one after another, revisions' cell reuse,
  a sweep's throughput against the backend's;
* :mod:`bench.store` — listing and opening sessions in a large store;
* :mod:`bench.processes` — several Ponder processes sharing one machine;
* :mod:`bench.server` — what Ponder adds on top of an inference server;
* :mod:`bench.gui_pan`, :mod:`bench.gui_stall` — the app's drawing speed and the window's stalls;
* :mod:`bench.screenshot` — the app's window rendered offscreen to a PNG.
"""
