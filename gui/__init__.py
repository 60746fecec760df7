"""Ponder's desktop app (PySide6). Imports Qt lazily, so `ponder COMMAND` never needs a display."""
