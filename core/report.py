"""A self-contained HTML report of one clustering run.

The page has inline CSS and inline SVG charts (:mod:`.charts`) only, so it
opens anywhere (QGIS's Processing Results Viewer, a browser, an e-mail)
without files next to it. It shows the parameters, a summary of the
clusters, the tuning trials, the weight and radius distributions against
their targets, and optional quality checks and notes.

The report reads the result by duck typing, so anything with these
attributes works (a :class:`~.tuned.ClusteringResult` in practice):

``clusters``
    DataFrame, one row per cluster; columns used when present:
    ``cluster_id, weight, radius_m, n_units, pass, centre_x, centre_y, status``.
``trials``
    DataFrame, one row per tuning trial; columns used when present:
    ``pass, parent_id, trial, k, score, median_weight, median_radius_m``.
``best_k``
    The k chosen in the first pass.
``n_clusters``
    Number of clusters in the final result.

A partitioned run (``clusters`` and ``trials`` with a ``partition`` column,
as :func:`~.partitions.cluster_partitions` returns) gets a table with one
row per partition, and its tuning charts are drawn per partition.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .charts import format_number, svg_bar_chart, svg_histogram, svg_scatter_line

DEFAULT_TITLE = "Tuned Grid Clustering report"

# Tables longer than this are cut (the page must stay light in a viewer).
MAX_TABLE_ROWS = 2000
# Partitioned runs: tuning charts drawn for at most this many partitions.
MAX_PARTITION_CHARTS = 6

# Parameter names (compared lower-cased) that give the targets drawn on charts.
TARGET_WEIGHT_KEYS = (
    "target_weight",
    "desired_cluster_weight",
    "desired_weight",
    "target_cluster_weight",
    "weight_target",
)
MIN_WEIGHT_KEYS = ("min_weight", "min_cluster_weight", "minimum_weight", "minimum_cluster_weight")
MAX_WEIGHT_KEYS = ("max_weight", "max_cluster_weight", "maximum_weight", "maximum_cluster_weight")
TARGET_RADIUS_KEYS = (
    "target_radius",
    "target_radius_m",
    "desired_cluster_radius",
    "desired_radius",
    "target_cluster_radius",
    "radius_target",
)
MAX_RADIUS_KEYS = (
    "max_radius",
    "max_radius_m",
    "max_cluster_radius",
    "maximum_radius",
    "radius_cap",
    "radius_cap_m",
)

_TRIAL_COLUMNS = ("pass", "parent_id", "trial", "k", "score", "median_weight", "median_radius_m")
_CLUSTER_COLUMNS = ("cluster_id", "weight", "radius_m", "n_units", "pass", "status")

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 40px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
p.lead { color: #555; margin: 0 0 12px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 8px 14px;
        min-width: 130px; }
.card .label { font-size: 11px; color: #666; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 20px; font-weight: bold; margin-top: 2px; }
.card .detail { font-size: 11px; color: #666; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; }
.chart { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 6px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid #dde1e7; padding: 3px 9px; text-align: left; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fdecea; font-weight: bold; }
details { margin: 8px 0; }
summary { cursor: pointer; color: #1f4e8c; }
.muted { color: #777; font-size: 12px; }
ul.notes li { margin: 3px 0; }
"""


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _as_number(value: object) -> float | None:
    """A finite float, or None for None, text, NaN and the like."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _lookup(
    parameters: Mapping[str, Any], result: object, keys: Sequence[str], *, positive: bool
) -> float | None:
    """First numeric value among ``keys`` in the parameters, then on the result.

    The result is searched in its ``params`` dict (the estimator's
    parameters), then in its attributes. With ``positive``, zero and
    negative values count as "not set" (the usual convention for optional
    caps such as a maximum radius).
    """
    lowered = {str(key).lower(): value for key, value in parameters.items()}
    result_params = getattr(result, "params", None)
    if not isinstance(result_params, Mapping):
        result_params = {}
    for key in keys:
        candidates = [lowered.get(key), result_params.get(key), getattr(result, key, None)]
        for candidate in candidates:
            number = _as_number(candidate)
            if number is not None and (number > 0 or not positive):
                return number
    return None


def _format_parameter(value: object) -> str:
    """A readable text for any parameter value (not yet escaped)."""
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            return str(number)
        return f"{number:,.0f}" if number == int(number) and abs(number) < 1e15 else f"{number:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_format_parameter(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_format_parameter(item) for item in value)
    return str(value)


def _format_cell(value: object, column: str) -> tuple[str, bool]:
    """Table cell text and whether it is numeric (right-aligned)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", False
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), False
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if column not in ("pass", "trial", "k") else str(int(value)), True
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if column == "score":
            return f"{number:,.2f}", True
        if number == int(number) and column in ("pass", "trial", "k", "n_units"):
            return str(int(number)), True
        return (f"{number:,.1f}" if abs(number) < 1e6 else f"{number:,.0f}"), True
    return str(value), False


def _humanise(key: str) -> str:
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _frame(result: object, name: str) -> pd.DataFrame:
    value = getattr(result, name, None)
    if value is None:
        return pd.DataFrame()
    if isinstance(value, pd.DataFrame):
        return value
    return pd.DataFrame(value)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Finite float values of a column, empty when the column is missing."""
    if name not in frame.columns:
        return np.empty(0)
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _percentile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _metres(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:,.0f} m"


def _weight(value: float | None) -> str:
    return "\u2014" if value is None else format_number(value)


def _share(value: float | None) -> str:
    return "\u2014" if value is None else f"{value:.0%}"


def _card(label: str, value: str, detail: str = "") -> str:
    detail_html = f'<div class="detail">{_esc(detail)}</div>' if detail else ""
    return (
        f'<div class="card"><div class="label">{_esc(label)}</div>'
        f'<div class="value">{_esc(value)}</div>{detail_html}</div>'
    )


def _table(
    frame: pd.DataFrame,
    columns: Iterable[str],
    *,
    best_row: int | None = None,
    max_rows: int = MAX_TABLE_ROWS,
) -> str:
    """An HTML table of the given columns (those present, then any others)."""
    wanted = [c for c in columns if c in frame.columns]
    wanted += [c for c in frame.columns if c not in wanted]
    shown = frame.iloc[:max_rows]
    rows = ["<table><thead><tr>"]
    rows += [f"<th>{_esc(column)}</th>" for column in wanted]
    rows.append("</tr></thead><tbody>")
    for position, record in enumerate(shown[wanted].itertuples(index=False, name=None)):
        css = ' class="best"' if best_row is not None and position == best_row else ""
        cells = []
        for column, value in zip(wanted, record):
            text, numeric = _format_cell(value, str(column))
            align = ' class="num"' if numeric else ""
            cells.append(f"<td{align}>{_esc(text)}</td>")
        rows.append(f"<tr{css}>{''.join(cells)}</tr>")
    rows.append("</tbody></table>")
    if len(frame) > max_rows:
        rows.append(f'<p class="muted">First {max_rows:,} of {len(frame):,} rows shown.</p>')
    return "".join(rows)


def _chart(svg: str) -> str:
    return f'<div class="chart">{svg}</div>'


def _charts(*svgs: str) -> str:
    """A row of charts that wraps on narrow pages."""
    return f'<div class="charts">{"".join(_chart(svg) for svg in svgs)}</div>'


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def _parameters_section(parameters: Mapping[str, Any]) -> str:
    if not parameters:
        return '<h2>Parameters</h2><p class="muted">No parameters recorded.</p>'
    rows = "".join(
        f"<tr><th>{_esc(key)}</th><td>{_esc(_format_parameter(value))}</td></tr>"
        for key, value in parameters.items()
    )
    return f"<h2>Parameters</h2><table><tbody>{rows}</tbody></table>"


def _summary_section(
    result: object,
    clusters: pd.DataFrame,
    *,
    min_weight: float | None,
    max_weight: float | None,
) -> str:
    weights = _column(clusters, "weight")
    radii = _column(clusters, "radius_m")
    n_clusters = getattr(result, "n_clusters", None)
    if n_clusters is None:
        n_clusters = len(clusters)
    best_k = getattr(result, "best_k", None)
    passes = _column(clusters, "pass")
    units = _column(clusters, "n_units")

    cards = [_card("Clusters", f"{int(n_clusters):,}")]
    cards.append(_card("Best k (pass 1)", "\u2014" if best_k is None else f"{int(best_k):,}"))
    if passes.size:
        cards.append(_card("Passes", f"{int(passes.max()):,}"))
    cards.append(
        _card(
            "Total weight",
            _weight(float(weights.sum()) if weights.size else None),
            f"{int(units.sum()):,} units" if units.size else "",
        )
    )
    cards.append(
        _card(
            "Weight median",
            _weight(_percentile(weights, 50)),
            f"p10 {_weight(_percentile(weights, 10))} \u00b7 "
            f"p90 {_weight(_percentile(weights, 90))}",
        )
    )
    if (min_weight is not None or max_weight is not None) and weights.size:
        low = -math.inf if min_weight is None else min_weight
        high = math.inf if max_weight is None else max_weight
        share = float(np.mean((weights >= low) & (weights <= high)))
        low_text = "\u2212\u221e" if min_weight is None else _weight(min_weight)
        high_text = "\u221e" if max_weight is None else _weight(max_weight)
        range_text = f"in [{low_text}, {high_text}]"
        cards.append(_card("Weight in range", _share(share), range_text))
    cards.append(
        _card(
            "Radius median",
            _metres(_percentile(radii, 50)),
            f"p90 {_metres(_percentile(radii, 90))} \u00b7 "
            f"max {_metres(float(radii.max()) if radii.size else None)}",
        )
    )
    return f'<h2>Summary</h2><div class="cards">{"".join(cards)}</div>'


def _partitions(frame: pd.DataFrame) -> list[Any]:
    """Distinct partition values of a frame, in order of appearance ([] if not partitioned)."""
    if frame.empty or "partition" not in frame.columns:
        return []
    values = frame["partition"].dropna()
    return list(pd.unique(values)) if values.nunique() > 1 else []


def _first_pass(trials: pd.DataFrame) -> pd.DataFrame:
    if "pass" not in trials.columns or trials.empty:
        return trials
    return trials[trials["pass"] == trials["pass"].min()]


def _best_k(trials: pd.DataFrame) -> int | None:
    """k of the lowest-scoring first-pass trial (ties: smallest k)."""
    first = _first_pass(trials)
    scores = pd.to_numeric(first.get("score"), errors="coerce") if "score" in first else None
    if scores is None or scores.notna().sum() == 0:
        return None
    best = first.assign(_score=scores).dropna(subset=["_score"]).sort_values(["_score", "k"])
    return int(best["k"].iloc[0])


def _score_chart(first: pd.DataFrame, title: str, best_k: float | None) -> str:
    """Score against k of one search's trials, the chosen k marked."""
    return svg_scatter_line(
        first["k"],
        first["score"],
        title=title,
        x_label="k (number of clusters)",
        y_label="score (lower is better)",
        highlight_x=best_k,
        highlight_label=None if best_k is None else f"best k = {int(best_k)}",
    )


def _partitions_section(
    clusters: pd.DataFrame,
    trials: pd.DataFrame,
    *,
    min_weight: float | None,
    max_weight: float | None,
) -> str:
    """One row per partition: clusters, best k, weights, radii, statuses."""
    keys = _partitions(clusters)
    if not keys:
        return ""
    low = -math.inf if min_weight is None else min_weight
    high = math.inf if max_weight is None else max_weight
    rows = []
    for key in keys:
        own = clusters[clusters["partition"] == key]
        weights = _column(own, "weight")
        radii = _column(own, "radius_m")
        row: dict[str, Any] = {
            "partition": key,
            "clusters": len(own),
            "units": int(_column(own, "n_units").sum()),
            "best k": _best_k(trials[trials["partition"] == key])
            if "partition" in trials.columns
            else None,
            "weight median": _percentile(weights, 50),
        }
        if min_weight is not None or max_weight is not None:
            row["in range"] = _share(float(np.mean((weights >= low) & (weights <= high))))
        row["radius median m"] = _percentile(radii, 50)
        row["radius p90 m"] = _percentile(radii, 90)
        if "status" in own.columns:
            problems = own.loc[own["status"].astype(str) != "ok", "status"].astype(str)
            row["ok"] = _share(1.0 - len(problems) / len(own)) if len(own) else "\u2014"
            counts = problems.value_counts()
            row["not ok"] = ", ".join(f"{name} {count}" for name, count in counts.items())
        rows.append(row)
    return (
        f'<h2>Partitions</h2><p class="lead">{len(keys):,} partitions, clustered '
        "independently: no cluster crosses a partition boundary.</p>"
        f"{_table(pd.DataFrame(rows), [])}"
    )


def _trials_section(result: object, trials: pd.DataFrame) -> str:
    parts = ["<h2>Tuning trials</h2>"]
    if trials.empty or "k" not in trials.columns or "score" not in trials.columns:
        parts.append('<p class="muted">No tuning trials recorded.</p>')
        return "".join(parts)
    parts.append(
        '<p class="lead">Each trial clusters the units into k clusters and scores the result: '
        "the distance of the median cluster weight from the target weight (scaled to metres) "
        "plus the distance of the median radius from the target radius. Lower is better.</p>"
    )
    keys = _partitions(trials)
    if keys:
        shown = keys[:MAX_PARTITION_CHARTS]
        charts = []
        for key in shown:
            own = _first_pass(trials[trials["partition"] == key])
            charts.append(_score_chart(own, f"{key}: score by k (first pass)", _best_k(own)))
        parts.append(_charts(*charts))
        if len(keys) > len(shown):
            parts.append(
                f'<p class="muted">Charts for the first {len(shown)} of {len(keys):,} '
                "partitions; the Partitions table gives every partition's best k.</p>"
            )
        parts.append(
            f"<details><summary>All {len(trials):,} trials</summary>"
            f"{_table(trials, ('partition', *_TRIAL_COLUMNS))}</details>"
        )
        return "".join(parts)
    first = _first_pass(trials)
    first_pass = trials["pass"].min() if "pass" in trials.columns else 1
    best_k = _as_number(getattr(result, "best_k", None))
    title = f"Pass {first_pass}: score by number of clusters k"
    parts.append(_charts(_score_chart(first, title, best_k)))
    # Highlight, in the table, the best pass-1 trial with the chosen k.
    best_row = None
    if best_k is not None:
        scores = pd.to_numeric(trials["score"], errors="coerce")
        candidates = (trials["k"] == best_k) & scores.notna()
        if "pass" in trials.columns:
            candidates &= trials["pass"] == first_pass
        if candidates.any():
            label = scores[candidates].idxmin()
            best_row = int(trials.index.get_indexer([label])[0])
    n_passes = trials["pass"].nunique() if "pass" in trials.columns else 1
    parts.append(
        f"<details><summary>All {len(trials):,} trials ({n_passes} "
        f"pass{'es' if n_passes != 1 else ''})</summary>"
        f"{_table(trials, _TRIAL_COLUMNS, best_row=best_row)}</details>"
    )
    return "".join(parts)


def _distributions_section(
    clusters: pd.DataFrame,
    *,
    target_weight: float | None,
    min_weight: float | None,
    max_weight: float | None,
    target_radius: float | None,
    max_radius: float | None,
) -> str:
    weight_markers = {"target": target_weight, "min": min_weight, "max": max_weight}
    shade = (min_weight, max_weight) if min_weight is not None and max_weight is not None else None
    weight_svg = svg_histogram(
        _column(clusters, "weight"),
        title="Cluster weight",
        x_label="weight",
        y_label="clusters",
        markers={k: v for k, v in weight_markers.items() if v is not None},
        shade_range=shade,
    )
    radius_markers = {"target radius": target_radius, "max radius": max_radius}
    radius_svg = svg_histogram(
        _column(clusters, "radius_m"),
        title="Cluster radius (minimum enclosing circle)",
        x_label="radius (m)",
        y_label="clusters",
        markers={k: v for k, v in radius_markers.items() if v is not None},
    )
    parts = [
        "<h2>Distributions</h2>",
        f'<div class="charts">{_chart(weight_svg)}{_chart(radius_svg)}</div>',
    ]
    if not clusters.empty:
        columns = [c for c in _CLUSTER_COLUMNS if c in clusters.columns]
        parts.append(
            f"<details><summary>All {len(clusters):,} clusters</summary>"
            f"{_table(clusters[columns] if columns else clusters, columns)}</details>"
        )
    return "".join(parts)


def _quality_section(quality: Mapping[str, Any] | None, clusters: pd.DataFrame) -> str:
    """Shares (values in [0, 1]) as bars, count dicts as bars, the rest as a table."""
    shares: dict[str, float] = {}
    counts: dict[str, Mapping[str, Any]] = {}
    others: dict[str, Any] = {}
    for key, value in (quality or {}).items():
        number = _as_number(value)
        if isinstance(value, Mapping):
            counts[str(key)] = value
        elif number is not None and "share" in str(key).lower() and 0 <= number <= 1:
            shares[str(key)] = number
        else:
            others[str(key)] = value
    if not counts and "status" in clusters.columns and not clusters.empty:
        status = clusters["status"].astype(str).value_counts(sort=False)
        counts["status_counts"] = {name: int(n) for name, n in sorted(status.items())}
    if not (shares or counts or others):
        return ""

    parts = ["<h2>Quality checks</h2>", '<div class="charts">']
    if shares:
        names = [_humanise(key) for key in shares]
        parts.append(
            _chart(
                svg_bar_chart(
                    names,
                    list(shares.values()),
                    title="Share of clusters passing each check",
                    value_format=lambda v: f"{v:.0%}",
                    max_value=1.0,
                )
            )
        )
    for key, mapping in counts.items():
        labels = [str(name) for name in mapping]
        values = [_as_number(v) or 0.0 for v in mapping.values()]
        chart = svg_bar_chart(labels, values, title=_humanise(key), x_label="clusters")
        parts.append(_chart(chart))
    parts.append("</div>")
    rows = [
        f"<tr><th>{_esc(_humanise(key))}</th><td class='num'>{_esc(_share(value))}</td></tr>"
        for key, value in shares.items()
    ]
    rows += [
        f"<tr><th>{_esc(_humanise(key))}</th><td>{_esc(_format_parameter(value))}</td></tr>"
        for key, value in others.items()
    ]
    if rows:
        parts.append(f"<table><tbody>{''.join(rows)}</tbody></table>")
    return "".join(parts)


def _notes_section(notes: Sequence[str] | None) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_esc(note)}</li>" for note in notes)
    return f'<h2>Notes</h2><ul class="notes">{items}</ul>'


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def clustering_report_html(
    result: object,
    parameters: Mapping[str, Any],
    *,
    title: str = DEFAULT_TITLE,
    quality: Mapping[str, Any] | None = None,
    notes: Sequence[str] | None = None,
) -> str:
    """Render a clustering run as one self-contained HTML page.

    Parameters
    ----------
    result : ClusteringResult or any object with the same attributes
        Needs ``clusters`` (DataFrame), ``trials`` (DataFrame), ``best_k``
        and ``n_clusters`` (see the module docstring); missing parts are
        reported as absent rather than failing.
    parameters : mapping
        The run's parameters, shown as a table in the given order (values
        are escaped). Targets drawn on the charts are read from these keys
        (case-insensitive), falling back to ``result.params`` and then to
        attributes of ``result`` with the same names: target weight
        ``target_weight``/``desired_cluster_weight``; accepted range
        ``min_weight``/``min_cluster_weight`` and
        ``max_weight``/``max_cluster_weight``; target radius (metres)
        ``target_radius``/``desired_cluster_radius``; radius cap (metres)
        ``max_radius``/``max_cluster_radius``. Zero or negative values
        count as "not set". The full lists are the ``*_KEYS`` constants.
    title : str
        Page title and heading.
    quality : mapping, optional
        Quality checks: keys containing ``share`` with values in [0, 1] are
        drawn as percentage bars (e.g. ``share_in_range``,
        ``share_contiguous``, ``share_within_radius_cap``, ``share_ok``);
        mapping values (e.g. ``status_counts={"ok": 17, "too heavy": 2}``)
        as count bars; anything else is listed in a table. Without it,
        status counts are drawn when ``clusters`` has a ``status`` column.
    notes : sequence of str, optional
        Free-text remarks (warnings, data sources), listed at the end.

    Returns
    -------
    str
        The HTML document.
    """
    parameters = dict(parameters or {})
    clusters = _frame(result, "clusters")
    trials = _frame(result, "trials")
    target_weight = _lookup(parameters, result, TARGET_WEIGHT_KEYS, positive=True)
    min_weight = _lookup(parameters, result, MIN_WEIGHT_KEYS, positive=True)
    max_weight = _lookup(parameters, result, MAX_WEIGHT_KEYS, positive=True)
    target_radius = _lookup(parameters, result, TARGET_RADIUS_KEYS, positive=True)
    max_radius = _lookup(parameters, result, MAX_RADIUS_KEYS, positive=True)

    body = [
        f"<h1>{_esc(title)}</h1>",
        _parameters_section(parameters),
        _summary_section(result, clusters, min_weight=min_weight, max_weight=max_weight),
        _notes_section(notes),
        _partitions_section(clusters, trials, min_weight=min_weight, max_weight=max_weight),
        _trials_section(result, trials),
        _distributions_section(
            clusters,
            target_weight=target_weight,
            min_weight=min_weight,
            max_weight=max_weight,
            target_radius=target_radius,
            max_radius=max_radius,
        ),
        _quality_section(quality, clusters),
        '<p class="muted">Made by the Tuned Grid Clustering QGIS plugin.</p>',
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{''.join(part for part in body if part)}\n</main>\n</body>\n</html>\n"
    )


def write_report(html: str, path: str | os.PathLike[str]) -> Path:
    """Write the HTML to ``path`` (UTF-8), creating missing folders.

    Parameters
    ----------
    html : str
        The document, e.g. from :func:`clustering_report_html`.
    path : str or path-like
        Destination file.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    destination = Path(path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(html, encoding="utf-8")
    return destination
