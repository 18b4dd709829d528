"""Small inline SVG charts for the HTML report, with no plotting library.

The report must render wherever ``core`` runs, so the charts are plain SVG
strings built from numpy arithmetic: no matplotlib, no JavaScript, no fonts
to embed. Every function returns one ``<svg>`` element that can be pasted
into an HTML page (or saved as a ``.svg`` file, it carries its namespace).

All functions accept empty or constant data and then draw an empty frame
with a short message, or a narrow range around the single value, instead of
failing: a report about a run that produced little is still a report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np

DEFAULT_WIDTH = 560
DEFAULT_HEIGHT = 300

_FONT = "Helvetica, Arial, sans-serif"
_AXIS_COLOUR = "#444444"
_GRID_COLOUR = "#e3e3e3"
_BAR_COLOUR = "#4c78a8"
_POINT_COLOUR = "#4c78a8"
_HIGHLIGHT_COLOUR = "#d62728"
_SHADE_COLOUR = "#2ca02c"
# Marker lines: "target" always in red, the others in this order.
_MARKER_COLOURS = ("#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
_TARGET_COLOUR = "#d62728"

_TITLE_HEIGHT = 26
_MARKER_ROW_HEIGHT = 13
# Roughly the width of one character at 10 px, to keep labels from colliding.
_CHAR_WIDTH = 5.8


# ---------------------------------------------------------------------------
# Helpers: escaping, numbers, ticks
# ---------------------------------------------------------------------------


def _esc(text: object) -> str:
    """Escape any value for use as SVG text or attribute content."""
    return html.escape(str(text), quote=True)


def _finite(values: Iterable[float] | None) -> np.ndarray:
    """Values as a 1-D float array without NaN and infinities."""
    if values is None:
        return np.empty(0)
    if not hasattr(values, "__len__"):
        values = list(values)
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def _nice_step(raw_step: float) -> float:
    """The 1, 2, 2.5 or 5 times a power of ten closest above ``raw_step``."""
    if not math.isfinite(raw_step) or raw_step <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw_step))
    fraction = raw_step / 10**exponent
    for nice in (1.0, 2.0, 2.5, 5.0, 10.0):
        if fraction <= nice * (1 + 1e-9):
            return nice * 10**exponent
    return 10.0 ** (exponent + 1)


def _nice_step_near(raw_step: float) -> float:
    """The 1, 2, 2.5 or 5 times a power of ten closest to ``raw_step`` (ratio-wise)."""
    if not math.isfinite(raw_step) or raw_step <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw_step))
    candidates = [nice * 10.0**exponent for nice in (1.0, 2.0, 2.5, 5.0, 10.0)]
    return min(candidates, key=lambda step: abs(math.log(step / raw_step)))


def nice_ticks(
    low: float, high: float, max_ticks: int = 6, *, integer: bool = False
) -> list[float]:
    """Round tick positions covering ``[low, high]``, at most about ``max_ticks``.

    Parameters
    ----------
    low, high : float
        The axis range (``high`` may equal ``low``).
    max_ticks : int
        Upper bound on the number of ticks wanted.
    integer : bool
        Whole-number steps only (for counts).

    Returns
    -------
    list of float
        Ticks inside ``[low, high]``, evenly spaced by a 1/2/2.5/5 step.
    """
    if high < low:
        low, high = high, low
    if high == low:
        return [low]
    step = _nice_step((high - low) / max(max_ticks - 1, 1))
    if integer:
        step = 2.0 if step == 2.5 else max(1.0, step)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = first + len(ticks) * step
    return ticks


def format_number(value: float, step: float | None = None) -> str:
    """A short human label: thousands separators, decimals only when needed.

    Parameters
    ----------
    value : float
        Number to format.
    step : float, optional
        Spacing of neighbouring labels (tick step); decides the decimals so
        that neighbours differ. Without it, up to three significant decimals.
    """
    if not math.isfinite(value):
        return str(value)
    if step is not None and step > 0:
        decimals = max(0, -math.floor(math.log10(step) + 1e-9))
        if abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
            decimals += 1  # steps like 2.5 need one more digit
        return f"{value:,.{decimals}f}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"  # three significant digits: 68, 7.25, 0.123


def _padded_range(low: float, high: float) -> tuple[float, float]:
    """A non-empty range: a constant value gets a small band around it."""
    if high > low:
        return low, high
    half = max(abs(low) * 0.05, 0.5)
    return low - half, high + half


class _Frame:
    """Pixel geometry of one chart: the plot area and the data-to-pixel maps."""

    def __init__(
        self,
        width: int,
        height: int,
        *,
        left: float = 62,
        right: float = 18,
        top: float = _TITLE_HEIGHT + 8,
        bottom: float = 46,
    ) -> None:
        self.width = width
        self.height = height
        self.left = left
        self.right = width - right
        self.top = top
        self.bottom = height - bottom
        self.x_range = (0.0, 1.0)
        self.y_range = (0.0, 1.0)

    def x(self, value: float) -> float:
        low, high = self.x_range
        return self.left + (value - low) / (high - low) * (self.right - self.left)

    def y(self, value: float) -> float:
        low, high = self.y_range
        return self.bottom - (value - low) / (high - low) * (self.bottom - self.top)


def _svg_open(width: int, height: int, title: str) -> list[str]:
    label = _esc(title or "chart")
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{label}" '
        f'font-family="{_FONT}" font-size="11">',
        f"<title>{label}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]


def _svg_close(parts: list[str]) -> str:
    """The finished ``<svg>`` element from the parts of :func:`_svg_open`."""
    parts.append("</svg>")
    return "\n".join(parts)


def _title(parts: list[str], frame: _Frame, title: str) -> None:
    if title:
        parts.append(
            f'<text x="{frame.width / 2:.1f}" y="18" text-anchor="middle" font-size="13" '
            f'font-weight="bold" fill="#222222">{_esc(title)}</text>'
        )


def _no_data(parts: list[str], frame: _Frame, message: str = "no data") -> None:
    parts.append(
        f'<rect x="{frame.left:.1f}" y="{frame.top:.1f}" width="{frame.right - frame.left:.1f}" '
        f'height="{frame.bottom - frame.top:.1f}" fill="none" stroke="{_GRID_COLOUR}"/>'
    )
    parts.append(
        f'<text x="{(frame.left + frame.right) / 2:.1f}" y="{(frame.top + frame.bottom) / 2:.1f}" '
        f'text-anchor="middle" fill="#888888">{_esc(message)}</text>'
    )


def _axes(
    parts: list[str],
    frame: _Frame,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    *,
    x_label: str,
    y_label: str,
    x_tick_labels: Sequence[str] | None = None,
) -> None:
    """Grid lines, both axes with tick labels, and the axis titles."""
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else None
    for tick in y_ticks:
        y = frame.y(tick)
        parts.append(
            f'<line x1="{frame.left:.1f}" y1="{y:.1f}" x2="{frame.right:.1f}" y2="{y:.1f}" '
            f'stroke="{_GRID_COLOUR}"/>'
        )
        parts.append(
            f'<text x="{frame.left - 6:.1f}" y="{y + 3.5:.1f}" text-anchor="end" '
            f'fill="{_AXIS_COLOUR}">{_esc(format_number(tick, y_step))}</text>'
        )
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else None
    for index, tick in enumerate(x_ticks):
        x = frame.x(tick)
        label = x_tick_labels[index] if x_tick_labels is not None else format_number(tick, x_step)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.bottom:.1f}" x2="{x:.1f}" y2="{frame.bottom + 4:.1f}" '
            f'stroke="{_AXIS_COLOUR}"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{frame.bottom + 16:.1f}" text-anchor="middle" '
            f'fill="{_AXIS_COLOUR}">{_esc(label)}</text>'
        )
    parts.append(
        f'<line x1="{frame.left:.1f}" y1="{frame.bottom:.1f}" x2="{frame.right:.1f}" '
        f'y2="{frame.bottom:.1f}" stroke="{_AXIS_COLOUR}"/>'
    )
    parts.append(
        f'<line x1="{frame.left:.1f}" y1="{frame.top:.1f}" x2="{frame.left:.1f}" '
        f'y2="{frame.bottom:.1f}" stroke="{_AXIS_COLOUR}"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{(frame.left + frame.right) / 2:.1f}" y="{frame.height - 8:.1f}" '
            f'text-anchor="middle" fill="#222222">{_esc(x_label)}</text>'
        )
    if y_label:
        middle = (frame.top + frame.bottom) / 2
        parts.append(
            f'<text x="14" y="{middle:.1f}" text-anchor="middle" fill="#222222" '
            f'transform="rotate(-90 14 {middle:.1f})">{_esc(y_label)}</text>'
        )


def _marker_colour(name: str, index: int) -> str:
    if name.lower().startswith("target"):
        return _TARGET_COLOUR
    return _MARKER_COLOURS[index % len(_MARKER_COLOURS)]


def _layout_marker_labels(
    markers: Sequence[tuple[str, float, float]], plot_left: float, plot_right: float
) -> list[int]:
    """Row (0 = nearest the plot) for each label so that labels don't overlap.

    ``markers`` are (label, value, pixel x), sorted by pixel x.
    """
    row_ends: list[float] = []  # right edge of the last label in each row
    rows = []
    for label, _value, x in markers:
        half = len(label) * _CHAR_WIDTH / 2
        start = min(max(x - half, plot_left - 30), plot_right + 10 - 2 * half)
        for row, end in enumerate(row_ends):
            if start > end + 6:
                row_ends[row] = start + 2 * half
                rows.append(row)
                break
        else:
            row_ends.append(start + 2 * half)
            rows.append(len(row_ends) - 1)
    return rows


# ---------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------


def svg_histogram(
    values: Iterable[float] | None,
    *,
    bins: int = 20,
    title: str = "",
    x_label: str = "",
    y_label: str = "count",
    markers: dict[str, float] | None = None,
    shade_range: tuple[float, float] | None = None,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
) -> str:
    """Histogram of ``values`` with optional labelled vertical marker lines.

    Parameters
    ----------
    values : iterable of float
        The data; NaN and infinite values are ignored.
    bins : int
        Approximate number of bars; the bar width is rounded to a 1/2/2.5/5
        step so that bar edges fall on round numbers.
    title, x_label, y_label : str
        Chart title and axis titles (escaped).
    markers : dict of str to float, optional
        Vertical lines, e.g. ``{"target": 240, "min": 180, "max": 300}``.
        Entries whose value is None or not finite are skipped. A marker far
        outside the data (more than one data span away) is drawn at the
        plot edge with an arrow instead of squeezing the bars.
    shade_range : (float, float), optional
        A band to shade behind the bars, e.g. the accepted weight range.
    width, height : int
        Size in pixels.

    Returns
    -------
    str
        One ``<svg>`` element.
    """
    data = _finite(values)
    marker_items = [
        (str(name), float(value))
        for name, value in (markers or {}).items()
        if value is not None and math.isfinite(float(value))
    ]
    shade = None
    if shade_range is not None:
        shade_low, shade_high = (float(v) for v in shade_range)
        if math.isfinite(shade_low) and math.isfinite(shade_high) and shade_high >= shade_low:
            shade = (shade_low, shade_high)

    # Range: the data, stretched to the markers and shade that lie near it.
    if data.size:
        low, high = float(data.min()), float(data.max())
    elif marker_items:
        low = min(v for _, v in marker_items)
        high = max(v for _, v in marker_items)
    else:
        low, high = 0.0, 1.0
    low, high = _padded_range(low, high)
    span = high - low
    near = [v for _, v in marker_items if low - span <= v <= high + span]
    if shade is not None:
        near += [v for v in shade if low - span <= v <= high + span]
    if near:
        low, high = min([low, *near]), max([high, *near])

    bar_width = _nice_step_near((high - low) / max(int(bins), 1))
    first_edge = math.floor(low / bar_width + 1e-9) * bar_width
    n_bars = max(1, math.ceil((high - first_edge) / bar_width - 1e-9))
    if first_edge + n_bars * bar_width <= high:  # keep the maximum inside the last bar
        n_bars += 1
    edges = first_edge + bar_width * np.arange(n_bars + 1)
    counts = np.histogram(data, bins=edges)[0] if data.size else np.zeros(n_bars, dtype=int)

    # Marker labels sit above the plot in as many rows as needed.
    frame = _Frame(width, height)
    frame.x_range = (float(edges[0]), float(edges[-1]))
    placed = []
    for name, value in sorted(marker_items, key=lambda item: item[1]):
        inside = frame.x_range[0] <= value <= frame.x_range[1]
        x = frame.x(min(max(value, frame.x_range[0]), frame.x_range[1]))
        arrow = "" if inside else ("\u2190 " if value < frame.x_range[0] else "")
        tail = "" if inside or value < frame.x_range[0] else " \u2192"
        label = f"{arrow}{name} {format_number(value)}{tail}"
        placed.append((label, value, x))
    rows = _layout_marker_labels(placed, frame.left, frame.right)
    n_rows = max(rows) + 1 if rows else 0
    frame.top = _TITLE_HEIGHT + 8 + n_rows * _MARKER_ROW_HEIGHT

    y_max = float(counts.max()) if counts.size and counts.max() > 0 else 1.0
    y_ticks = nice_ticks(0.0, y_max, 5, integer=True)
    if y_ticks[-1] < y_max:
        y_ticks.append(y_ticks[-1] + (y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 1.0))
    frame.y_range = (0.0, max(y_ticks[-1], 1.0))

    parts = _svg_open(width, height, title)
    _title(parts, frame, title)
    if shade is not None:
        x0 = frame.x(min(max(shade[0], frame.x_range[0]), frame.x_range[1]))
        x1 = frame.x(min(max(shade[1], frame.x_range[0]), frame.x_range[1]))
        if x1 > x0:
            parts.append(
                f'<rect x="{x0:.1f}" y="{frame.top:.1f}" width="{x1 - x0:.1f}" '
                f'height="{frame.bottom - frame.top:.1f}" fill="{_SHADE_COLOUR}" '
                f'fill-opacity="0.12"/>'
            )
    x_ticks = nice_ticks(frame.x_range[0], frame.x_range[1], 7)
    _axes(parts, frame, x_ticks, y_ticks, x_label=x_label, y_label=y_label)
    if not data.size:
        parts.append(
            f'<text x="{frame.left + 12:.1f}" y="{frame.top + 16:.1f}" '
            f'fill="#888888">no data</text>'
        )
    for index, count in enumerate(counts):
        if count <= 0:
            continue
        x0, x1 = frame.x(edges[index]), frame.x(edges[index + 1])
        y = frame.y(float(count))
        parts.append(
            f'<rect x="{x0 + 0.5:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
            f'height="{frame.bottom - y:.1f}" fill="{_BAR_COLOUR}">'
            f"<title>{_esc(format_number(edges[index]))} to "
            f"{_esc(format_number(edges[index + 1]))}: {int(count)}</title></rect>"
        )
    marker_names = [name for name, _ in sorted(marker_items, key=lambda item: item[1])]
    colour_index = 0
    for (label, _value, x), row, name in zip(placed, rows, marker_names):
        colour = _marker_colour(name, colour_index)
        if colour != _TARGET_COLOUR:
            colour_index += 1
        label_y = frame.top - 4 - row * _MARKER_ROW_HEIGHT
        parts.append(
            f'<line x1="{x:.1f}" y1="{label_y + 2:.1f}" x2="{x:.1f}" y2="{frame.bottom:.1f}" '
            f'stroke="{colour}" stroke-width="1.6" stroke-dasharray="5,3"/>'
        )
        half = len(label) * _CHAR_WIDTH / 2
        label_x = min(max(x, frame.left - 30 + half), frame.right + 10 - half)
        parts.append(
            f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="middle" font-size="10" '
            f'fill="{colour}">{_esc(label)}</text>'
        )
    return _svg_close(parts)


def svg_scatter_line(
    x: Iterable[float] | None,
    y: Iterable[float] | None,
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    highlight_x: float | None = None,
    highlight_label: str | None = None,
    width: int = DEFAULT_WIDTH,
    height: int = DEFAULT_HEIGHT,
) -> str:
    """Points (x, y) plus a line through the lowest y at each x.

    Made for tuning trials (k against score, lower is better): every trial
    is a point, the line follows the best score per k, and ``highlight_x``
    (the chosen k) is marked in red.

    Parameters
    ----------
    x, y : iterable of float
        Same length; pairs with a non-finite member are ignored.
    title, x_label, y_label : str
        Chart title and axis titles (escaped).
    highlight_x : float, optional
        The x to mark: its lowest point is circled in red and labelled; if
        no point has this x, a red vertical line marks it instead.
    highlight_label : str, optional
        Text of the mark; default ``"best {x_label or 'x'} = {highlight_x}"``.
    width, height : int
        Size in pixels.

    Returns
    -------
    str
        One ``<svg>`` element.
    """
    xs = np.asarray(list(x) if x is not None else [], dtype=float).ravel()
    ys = np.asarray(list(y) if y is not None else [], dtype=float).ravel()
    if xs.size != ys.size:
        raise ValueError(f"x and y differ in length ({xs.size} and {ys.size}); pass pairs.")
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    highlight = None
    if highlight_x is not None and math.isfinite(float(highlight_x)):
        highlight = float(highlight_x)

    frame = _Frame(width, height)
    parts = _svg_open(width, height, title)
    _title(parts, frame, title)
    if not xs.size:
        _no_data(parts, frame)
        return _svg_close(parts)

    x_low, x_high = float(xs.min()), float(xs.max())
    if highlight is not None:
        x_low, x_high = min(x_low, highlight), max(x_high, highlight)
    x_low, x_high = _padded_range(x_low, x_high)
    x_pad = (x_high - x_low) * 0.04  # keep points off the frame
    frame.x_range = (x_low - x_pad, x_high + x_pad)
    y_low, y_high = _padded_range(float(ys.min()), float(ys.max()))
    y_pad = (y_high - y_low) * 0.08
    frame.y_range = (y_low - y_pad, y_high + y_pad)
    y_ticks = nice_ticks(frame.y_range[0], frame.y_range[1], 6)

    x_ticks = nice_ticks(x_low, x_high, 8, integer=bool(np.all(xs == np.round(xs))))
    x_ticks = [t for t in x_ticks if frame.x_range[0] <= t <= frame.x_range[1]]
    _axes(parts, frame, x_ticks, y_ticks, x_label=x_label, y_label=y_label)

    # The line follows the best (lowest) y for each distinct x.
    unique_x = np.unique(xs)
    best_y = np.array([ys[xs == value].min() for value in unique_x])
    if unique_x.size > 1:
        points = " ".join(f"{frame.x(a):.1f},{frame.y(b):.1f}" for a, b in zip(unique_x, best_y))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="#9aa7b5" stroke-width="1.4"/>'
        )
    for a, b in zip(xs, ys):
        parts.append(
            f'<circle cx="{frame.x(a):.1f}" cy="{frame.y(b):.1f}" r="3.5" fill="{_POINT_COLOUR}" '
            f'fill-opacity="0.65"><title>{_esc(format_number(a))}: '
            f"{_esc(format_number(b))}</title></circle>"
        )
    if highlight is not None:
        hx = frame.x(highlight)
        label = highlight_label or f"best {x_label or 'x'} = {format_number(highlight)}"
        matches = xs == highlight
        if matches.any():
            hy = frame.y(float(ys[matches].min()))
            parts.append(
                f'<circle cx="{hx:.1f}" cy="{hy:.1f}" r="7" fill="none" '
                f'stroke="{_HIGHLIGHT_COLOUR}" stroke-width="2"/>'
            )
            parts.append(
                f'<circle cx="{hx:.1f}" cy="{hy:.1f}" r="3.5" fill="{_HIGHLIGHT_COLOUR}"/>'
            )
            label_y = hy - 14 if hy - 14 > frame.top + 10 else hy + 22
        else:
            parts.append(
                f'<line x1="{hx:.1f}" y1="{frame.top:.1f}" x2="{hx:.1f}" y2="{frame.bottom:.1f}" '
                f'stroke="{_HIGHLIGHT_COLOUR}" stroke-width="1.6" stroke-dasharray="5,3"/>'
            )
            label_y = frame.top + 12
        half = len(label) * _CHAR_WIDTH * 1.1 / 2  # bold text is wider
        label_x = min(max(hx, frame.left + half + 2), frame.right - half - 2)
        # A white box keeps the label readable over points and the line.
        parts.append(
            f'<rect x="{label_x - half - 3:.1f}" y="{label_y - 11:.1f}" '
            f'width="{2 * half + 6:.1f}" height="15" rx="3" fill="#ffffff" '
            f'fill-opacity="0.85"/>'
        )
        parts.append(
            f'<text x="{label_x:.1f}" y="{label_y:.1f}" text-anchor="middle" '
            f'font-weight="bold" fill="{_HIGHLIGHT_COLOUR}">{_esc(label)}</text>'
        )
    return _svg_close(parts)


def svg_bar_chart(
    labels: Sequence[object] | None,
    values: Iterable[float] | None,
    *,
    title: str = "",
    x_label: str = "",
    value_format: Callable[[float], str] | None = None,
    max_value: float | None = None,
    colours: Sequence[str] | None = None,
    width: int = DEFAULT_WIDTH,
    height: int | None = None,
) -> str:
    """Horizontal bars, one per label, each with its value written at its end.

    Horizontal bars keep long category names (cluster statuses, check
    names) readable without rotated text.

    Parameters
    ----------
    labels : sequence
        Category names (escaped), one per bar, drawn top to bottom.
    values : iterable of float
        Bar lengths, same length as ``labels``; non-finite values count as 0.
    title, x_label : str
        Chart title and value-axis title.
    value_format : callable, optional
        Formats the value printed at the end of each bar and the axis ticks
        (e.g. ``lambda v: f"{v:.0%}"`` for shares). Default: :func:`format_number`.
    max_value : float, optional
        Fixed end of the value axis, e.g. 1.0 for shares.
    colours : sequence of str, optional
        One fill colour per bar (cycled); default one blue.
    width : int
        Width in pixels.
    height : int, optional
        Height in pixels; default grows with the number of bars.

    Returns
    -------
    str
        One ``<svg>`` element.
    """
    names = [str(label) for label in (labels or [])]
    numbers = np.asarray(list(values) if values is not None else [], dtype=float).ravel()
    if numbers.size != len(names):
        raise ValueError(
            f"labels and values differ in length ({len(names)} and {numbers.size}); "
            "pass one value per label."
        )
    numbers = np.where(np.isfinite(numbers), numbers, 0.0)
    fmt = value_format or format_number
    bar_height = 20
    if height is None:
        height = int(_TITLE_HEIGHT + 16 + max(len(names), 1) * (bar_height + 8) + 44)
    longest = max((len(name) for name in names), default=4)
    left = min(max(60.0, longest * 6.4 + 16), width * 0.45)
    frame = _Frame(width, height, left=left, right=56)
    parts = _svg_open(width, height, title)
    _title(parts, frame, title)
    if not names:
        _no_data(parts, frame)
        return _svg_close(parts)

    low = min(0.0, float(numbers.min()))
    high = max(0.0, float(numbers.max()))
    if max_value is not None and math.isfinite(max_value):
        high = max(high, float(max_value))
    low, high = _padded_range(low, high) if high == low else (low, high)
    whole = value_format is None and bool(np.all(numbers == np.round(numbers)))
    x_ticks = nice_ticks(low, high, 6, integer=whole)
    if max_value is None and x_ticks[-1] < high:
        step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else high - low
        x_ticks.append(x_ticks[-1] + step)
    frame.x_range = (min(low, x_ticks[0]), max(high, x_ticks[-1]))
    frame.y_range = (0.0, float(len(names)))
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else None
    tick_labels = [fmt(t) if value_format else format_number(t, x_step) for t in x_ticks]

    # Value axis with vertical grid lines; category names instead of y ticks.
    for tick, tick_label in zip(x_ticks, tick_labels):
        x = frame.x(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top:.1f}" x2="{x:.1f}" y2="{frame.bottom:.1f}" '
            f'stroke="{_GRID_COLOUR}"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{frame.bottom + 16:.1f}" text-anchor="middle" '
            f'fill="{_AXIS_COLOUR}">{_esc(tick_label)}</text>'
        )
    parts.append(
        f'<line x1="{frame.left:.1f}" y1="{frame.bottom:.1f}" x2="{frame.right:.1f}" '
        f'y2="{frame.bottom:.1f}" stroke="{_AXIS_COLOUR}"/>'
    )
    zero = frame.x(0.0)
    slot = (frame.bottom - frame.top) / len(names)
    palette = list(colours) if colours else [_BAR_COLOUR]
    for index, (name, value) in enumerate(zip(names, numbers)):
        centre = frame.top + slot * (index + 0.5)
        thickness = min(bar_height, slot * 0.75)
        x_end = frame.x(float(value))
        x0, x1 = min(zero, x_end), max(zero, x_end)
        parts.append(
            f'<rect x="{x0:.1f}" y="{centre - thickness / 2:.1f}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{thickness:.1f}" fill="{palette[index % len(palette)]}">'
            f"<title>{_esc(name)}: {_esc(fmt(float(value)))}</title></rect>"
        )
        parts.append(
            f'<text x="{frame.left - 6:.1f}" y="{centre + 4:.1f}" text-anchor="end" '
            f'fill="#222222">{_esc(name)}</text>'
        )
        parts.append(
            f'<text x="{x1 + 4:.1f}" y="{centre + 4:.1f}" fill="{_AXIS_COLOUR}">'
            f"{_esc(fmt(float(value)))}</text>"
        )
    parts.append(
        f'<line x1="{zero:.1f}" y1="{frame.top:.1f}" x2="{zero:.1f}" y2="{frame.bottom:.1f}" '
        f'stroke="{_AXIS_COLOUR}"/>'
    )
    if x_label:
        parts.append(
            f'<text x="{(frame.left + frame.right) / 2:.1f}" y="{frame.height - 8:.1f}" '
            f'text-anchor="middle" fill="#222222">{_esc(x_label)}</text>'
        )
    return _svg_close(parts)
