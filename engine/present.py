"""How numbers and scores look to a reader, the same in the app and in the HTML export: FLOPs in
human units and the one PRM score colour scale. Pure functions, no imports of the engine above."""

from __future__ import annotations

GREY, GREY_STRONG = "#ececec", "#c8c8c8"  # unscored


def human_flops(x: float) -> str:
    """FLOPs as a reader takes them in: 3.1 TFLOP, 870 GFLOP; "-" when unknown (no parameter count)."""
    if not x:
        return "-"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            v = x / scale
            return f"{v:.3g} {unit}FLOP"
    return f"{x:.0f} FLOP"


def score_hsl(score: float, strong: bool = False) -> tuple[float, float, float]:
    """The one score scale of the app and the export: hue in degrees from red (0) through amber
    (0.5) to green (1), saturation and lightness in 0..1; light enough to read dark text on,
    ``strong`` (darker) for borders."""
    s = min(1.0, max(0.0, float(score)))
    return 120.0 * s, 0.70, 0.45 if strong else 0.82


def score_colour(score: float | None, strong: bool = False) -> str:
    """:func:`score_hsl` as a CSS colour; grey when unscored."""
    if score is None:
        return GREY_STRONG if strong else GREY
    h, sat, light = score_hsl(score, strong)
    return f"hsl({round(h)}, {round(100 * sat)}%, {round(100 * light)}%)"
