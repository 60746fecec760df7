"""Light and dark: the app follows the system's colour scheme (Qt 6.5+ reports it), or the one
``--theme`` / the saved setting names. Node tints are light on any theme, so text drawn on them is
always dark; the colours drawn on the window's own background come from here."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")
ON_TINT = "#222222"  # text on a score tint (the tints are light in both themes)


def system_is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    return scheme is not None and scheme() == Qt.ColorScheme.Dark


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor("#1e1f22"), QColor("#2b2d30"), QColor("#dfe1e5")
    for role, colour in (
        (QPalette.ColorRole.Window, window),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, window),
        (QPalette.ColorRole.ToolTipBase, window),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor("#3c3f41")),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.BrightText, QColor("#ff6b6b")),
        (QPalette.ColorRole.Link, QColor("#6fa8ff")),
        (QPalette.ColorRole.Highlight, QColor("#2f65ca")),
        (QPalette.ColorRole.HighlightedText, QColor("#ffffff")),
        (QPalette.ColorRole.PlaceholderText, QColor("#8c8f94")),
    ):
        p.setColor(role, colour)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#75787d"))
    return p


def apply_theme(app: QApplication, mode: str = "system") -> bool:
    """Set the palette for ``mode`` (system, light or dark); returns whether it is dark."""
    dark = mode == "dark" or (mode == "system" and system_is_dark())
    if dark:
        app.setStyle("Fusion")  # the platform styles may ignore a dark palette; Fusion follows it
        app.setPalette(dark_palette())
    elif mode == "light" and system_is_dark():
        app.setStyle("Fusion")
        app.setPalette(app.style().standardPalette())
    return dark


def is_dark() -> bool:
    app = QGuiApplication.instance()
    return (
        isinstance(app, QGuiApplication) and app.palette().color(QPalette.ColorRole.Window).lightnessF() < 0.5
    )


def colours() -> dict[str, str]:
    """Colours drawn on the window's background: right / wrong answers, the chosen outline."""
    if is_dark():
        return {"ok": "#62d07f", "bad": "#ff7b7b", "chosen": "#6fa8ff", "muted": "#9a9da3"}
    return {"ok": "#16702e", "bad": "#aa1111", "chosen": "#1f5fbf", "muted": "#666666"}
