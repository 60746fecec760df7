"""Ponder's headless core: llama.cpp backend, model discovery, CLI. Never imports Qt."""

__version__ = "0.1.0"
