"""Small server-side SVG charts: compression ratio against perplexity for the pair page, and logical bytes
against bytes on disk for the team Storage page.

Drawn here rather than with a JavaScript chart library: the page stays readable without scripts, the chart is
testable from Python, and nothing has to be vendored for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

from webapp.jobs.metrics import format_bytes

# One colour per codec id (cycled); chosen to stay distinguishable on white.
PALETTE = ("#3b5bdb", "#2f9e44", "#e8590c", "#ae3ec9", "#1098ad", "#c92a2a", "#f59f00", "#495057")


@dataclass(frozen=True)
class Point:
    label: str      # shown next to the point (codec id)
    group: str      # colour key (codec id)
    x: float        # perplexity (lower is better)
    y: float        # compression ratio (higher is better)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def ratio_quality_svg(points: list[Point], *, reference_x: float | None = None, width: int = 640,
                      height: int = 320, x_label: str = "perplexity (lower is better)",
                      y_label: str = "compression ratio (higher is better)", pareto: list[Point] | None = None,
                      highlight: Point | None = None) -> str:
    """Return an inline ``<svg>`` with one dot per point, or an empty string when there is nothing to plot.

    ``reference_x`` (e.g. the fine-tuned model's own perplexity) is drawn as a dashed vertical line, the
    ``pareto`` points are joined by a line (the Pareto front), and ``highlight`` gets a ring (the recommended
    artifact).
    """
    points = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    if not points:
        return ""
    left, right, top, bottom = 64, 20, 16, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [p.x for p in points] + ([reference_x] if reference_x is not None and math.isfinite(reference_x) else [])
    ys = [p.y for p in points]
    xticks = _nice_ticks(min(xs), max(xs))
    yticks = _nice_ticks(min(0.0, min(ys)), max(ys))
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    colours: dict[str, str] = {}
    for p in points:
        colours.setdefault(p.group, PALETTE[len(colours) % len(PALETTE)])

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(y_label)} against {escape(x_label)}">']
    for t in yticks:
        y = sy(t)
        parts.append(f'<line class="gridline" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in xticks:
        x = sx(t)
        parts.append(f'<line class="gridline" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    if reference_x is not None and math.isfinite(reference_x):
        x = sx(reference_x)
        parts.append(f'<line class="ref" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        parts.append(f'<text class="tick" x="{x + 4:.1f}" y="{top + plot_h - 6}">fine-tuned</text>')
    parts.append(f'<text class="label" x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
                 f'{escape(x_label)}</text>')
    parts.append(f'<text class="label" transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_label)}</text>')
    front = [p for p in (pareto or []) if math.isfinite(p.x) and math.isfinite(p.y)]
    if len(front) > 1:
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in sorted(front, key=lambda p: (p.y, p.x)))
        parts.append(f'<polyline class="pareto" points="{path}" fill="none" stroke="#868e96" '
                     f'stroke-dasharray="5 3"><title>Pareto front</title></polyline>')
    if highlight is not None and math.isfinite(highlight.x) and math.isfinite(highlight.y):
        parts.append(f'<circle class="recommended" cx="{sx(highlight.x):.1f}" cy="{sy(highlight.y):.1f}" r="11" '
                     f'fill="none" stroke="#f59f00" stroke-width="3"><title>smallest within tolerance: '
                     f'{escape(highlight.label)}</title></circle>')
    for p in points:
        x, y = sx(p.x), sy(p.y)
        parts.append(f'<circle class="pt" cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colours[p.group]}">'
                     f'<title>{escape(p.label)}: ratio {p.y:.3f}, {escape(x_label.split(" (")[0])} {p.x:.4g}</title>'
                     '</circle>')
        anchor, dx = ("end", -9) if x > left + plot_w * 0.8 else ("start", 9)
        parts.append(f'<text class="pt-label" x="{x + dx:.1f}" y="{y + 4:.1f}" text-anchor="{anchor}">'
                     f'{escape(p.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class SizeBar:
    label: str
    logical: int    # drawn as the light bar (what the item would take stored plainly)
    on_disk: int    # drawn over it, dark (what it takes); the light rest is what was saved


def size_bars_svg(bars: list[SizeBar], *, title: str, width: int = 900, row_height: int = 30) -> str:
    """Return an inline ``<svg>`` with one horizontal bar per item on a shared byte axis: logical bytes light, bytes
    on disk dark over them, so the light part is what was saved; empty string when every bar is 0."""
    bars = [b for b in bars if b.logical > 0 or b.on_disk > 0]
    if not bars:
        return ""
    left, right, top, bottom = 250, 130, 8, 28
    plot_w = width - left - right
    height = top + bottom + row_height * len(bars)
    largest = max(max(b.logical, b.on_disk) for b in bars)
    unit = 1024 ** next(k for k in range(5) if largest < 1024 ** (k + 1) or k == 4)  # ticks at round KiB/MiB/GiB
    ticks = [t * unit for t in _nice_ticks(0.0, largest / unit, count=4)]

    def sx(value: float) -> float:
        return left + value / ticks[-1] * plot_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{escape(title)}">']
    for t in ticks:
        x = sx(t)
        parts.append(f'<line class="gridline" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">'
                     f'{escape(format_bytes(t))}</text>')
    for index, bar in enumerate(bars):
        y = top + index * row_height + 4
        h = row_height - 10
        saved = bar.logical - bar.on_disk
        summary = f"{format_bytes(bar.on_disk)} on disk of {format_bytes(bar.logical)}" + (
            f", {format_bytes(saved)} saved" if saved > 0 else "")
        parts.append(f'<g class="bar" data-label="{escape(bar.label)}" data-logical="{bar.logical}" '
                     f'data-on-disk="{bar.on_disk}"><title>{escape(bar.label)}: {escape(summary)}</title>')
        parts.append(f'<text class="pt-label" x="{left - 8}" y="{y + h / 2 + 4:.1f}" text-anchor="end">'
                     f'{escape(bar.label)}</text>')
        parts.append(f'<rect class="logical" x="{left}" y="{y}" width="{sx(bar.logical) - left:.1f}" '
                     f'height="{h}" fill="{PALETTE[0]}" fill-opacity="0.22"/>')
        parts.append(f'<rect class="on-disk" x="{left}" y="{y}" width="{sx(bar.on_disk) - left:.1f}" '
                     f'height="{h}" fill="{PALETTE[0]}"/>')
        parts.append(f'<text class="tick" x="{max(sx(bar.logical), sx(bar.on_disk)) + 6:.1f}" '
                     f'y="{y + h / 2 + 4:.1f}">{escape(format_bytes(bar.on_disk))}'
                     f'{" of " + escape(format_bytes(bar.logical)) if saved > 0 else ""}</text>')
        parts.append("</g>")
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}"/>')
    parts.append("</svg>")
    return "".join(parts)
