"""One function per report figure; each returns a matplotlib Figure.

Figures are built with the object-oriented API on the Agg canvas, never through pyplot, so the
report neither needs a display nor changes the backend of a notebook that imports it.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from robusteval.analysis import Analysis
from robusteval.metrics import corruption_point

DENSE_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}
_WIDTH = 10.0  # inches; at 100 dpi a figure fits a laptop screen


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` as PNG bytes on the Agg canvas."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _method_colors(methods: Sequence[str]) -> dict[str, Any]:
    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _width(n: int, per_row: int = 3) -> float:
    """The width in inches of a figure of ``n`` panels in rows of ``per_row``."""
    return _WIDTH if min(n, per_row) > 1 else _WIDTH * 0.6


def _grid(n: int, *, per_row: int = 3, height: float = 3.0, legend: bool = True,
          left: float = 0.9, legend_rows: int = 2) -> tuple[Figure, list[Any]]:
    """``n`` panels in rows of ``per_row`` with fixed margins in inches (tight layout dominated render
    time) and, with ``legend``, room for a shared legend of ``legend_rows`` rows (two or fewer fit) below."""
    cols = min(n, per_row)
    rows = -(-n // cols)
    bottom = (1.3 if cols == 1 else 1.05) + 0.22 * max(0, legend_rows - 2) if legend else 0.55
    total = height * rows + bottom - 0.15
    width = _width(n, per_row)
    fig = Figure(figsize=(width, total))
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=left / width, right=0.97, top=1 - 0.35 / total, bottom=bottom / total,
                        wspace=0.35, hspace=0.55 * 3.0 / height)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _legend(fig: Figure, axes: Sequence[Any]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    wide = axes[0].get_gridspec().ncols > 1
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6 if wide else 3), frameon=False)


def metric_curves(analysis: Analysis, keys: Sequence[str]) -> Figure:
    """Metric vs prune ratio, one line per method, dense reference, tolerance band, 95% CIs."""
    colors = _method_colors(analysis.methods)
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        by_method = analysis.curves[key]
        first = next(iter(by_method.values()))
        dense, tol = first.dense, first.tolerance
        band = (dense, dense + tol) if first.lower_is_better else (dense - tol, dense)
        ax.axhspan(*band, color="0.85", label=f"tolerance δ={tol:g}")
        ax.axhline(dense, **DENSE_STYLE, label="dense")
        for method, curve in by_method.items():
            x = np.array([100 * p.ratio for p in curve.points])
            y = np.array([p.value for p in curve.points])
            ax.plot([0, *x], [dense, *y], marker="o", color=colors[method], label=method)
            cis = [(i, p) for i, p in enumerate(curve.points) if p.ci is not None]
            if cis:
                # value CI from the drop CI: value = dense - drop for accuracies (higher is better)
                lo = [y[i] - (dense - p.ci[1]) for i, p in cis]
                hi = [(dense - p.ci[0]) - y[i] for i, p in cis]
                ax.errorbar(x[[i for i, _ in cis]], y[[i for i, _ in cis]], yerr=np.abs([lo, hi]),
                            fmt="none", ecolor=colors[method], capsize=3, alpha=0.7)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("prune ratio (%)")
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


def corruption_heatmaps(analysis: Analysis, corruptions: Sequence[str]) -> Figure:
    """Accuracy drop vs dense (points, mean over severities): corruption × ratio, one panel per method."""
    dense = analysis.values[analysis.baseline]
    methods = analysis.methods
    longest = max(len(c) for c in corruptions)
    fig, axes = _grid(len(methods), height=0.45 * len(corruptions) + 1.0, legend=False, left=0.3 + 0.08 * longest)
    vmax = 1e-9
    grids = []
    for method in methods:
        ids = [(m.ratio, m.id) for m in analysis.models if m.method == method]
        ratios = sorted({r for r, _ in ids})
        grid = np.full((len(corruptions), len(ratios)), np.nan)
        for j, (ratio, model) in enumerate(sorted(ids)):
            for i, c in enumerate(corruptions):
                keys = [k for k in analysis.values[model]
                        if (hit := corruption_point(k)) and hit[0] == c and k in dense]
                if keys:
                    grid[i, ratios.index(ratio)] = 100 * np.mean([dense[k] - analysis.values[model][k] for k in keys])
        grids.append((ratios, grid))
        vmax = max(vmax, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 0.0)
    for ax, method, (ratios, grid) in zip(axes, methods, grids):
        im = ax.imshow(grid, cmap="RdYlGn_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(ratios)), [f"{100 * r:.0f}%" for r in ratios])
        ax.set_yticks(range(len(corruptions)), corruptions if ax is axes[0] else [""] * len(corruptions))
        ax.set_title(method, fontsize=10)
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes, label="accuracy drop (points)", shrink=0.8)
    return fig


def line_panels(panels: Mapping[str, Mapping[str, Mapping[float, float]]], *, xlabel: str,
                ylabel: str = "accuracy", dense: str | None = None) -> Figure:
    """Generic x-vs-accuracy panels: title → line label → {x: y}; the ``dense`` line is dashed.

    Used for severity curves (x = severity), adversarial accuracy vs ε and noise ε curves.
    """
    fig, axes = _grid(len(panels))
    labels = list(dict.fromkeys(label for lines in panels.values() for label in lines if label != dense))
    colors = _method_colors(labels)
    for ax, (title, lines) in zip(axes, panels.items()):
        for label, points in lines.items():
            xs = sorted(points)
            style = DENSE_STYLE if label == dense else {"color": colors[label]}
            ax.plot(xs, [points[x] for x in xs], marker="o", label=label, **style)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _legend(fig, axes)
    return fig


Bins = Mapping[str, Sequence[float | None]]
"""One reliability diagram's data: ``edges``, ``confidence``, ``accuracy`` per bin (None marks an empty bin)."""
Roc = Mapping[str, Sequence[float]]
"""One ROC curve: ``fpr`` and ``tpr``."""

RUN_LINES = ({"linestyle": "--", "alpha": 0.65}, {"linestyle": "-"})
"""Line styles of two runs drawn on the same axes: the first (base) run dashed, the second (new) solid."""
RUN_STYLES = ({**RUN_LINES[0], "marker": "s"}, {**RUN_LINES[1], "marker": "o"})
""":data:`RUN_LINES` with markers, for curves of a few points (:func:`overlay_lines`)."""
_BARS = ({"fill": False, "edgecolor": "tab:blue", "linestyle": "--", "linewidth": 1.0},
         {"fill": False, "edgecolor": "tab:red", "linestyle": "--", "linewidth": 1.0})
_FILLED_BARS = ({"color": "tab:blue", "edgecolor": "black", "linewidth": 0.4}, {"color": "tab:red", "alpha": 0.35})


def _reliability_bars(ax: Any, b: Bins, *, filled: bool, run: str = "") -> None:
    """Accuracy and the gap to mean confidence per non-empty bin: filled bars (the report's), or the same
    colours as dashed outlines (a comparison's base run); ``run`` names the run in the legend."""
    edges = np.asarray(b["edges"], float)
    conf = np.array([np.nan if v is None else v for v in b["confidence"]], float)
    acc = np.array([np.nan if v is None else v for v in b["accuracy"]], float)
    full = np.isfinite(conf) & np.isfinite(acc)
    left, width = edges[:-1][full], np.diff(edges)[full]
    accuracy, gap = _FILLED_BARS if filled else _BARS
    tag = f" ({run})" if run else ""
    ax.bar(left, acc[full], width=width, align="edge", label=f"accuracy{tag}", **accuracy)
    ax.bar(left, conf[full] - acc[full], bottom=acc[full], width=width, align="edge",
           label=f"gap to confidence{tag}", **gap)


def reliability_diagrams(bins: Mapping[str, Bins], *, base: Mapping[str, Bins] | None = None) -> Figure:
    """Reliability diagrams (Guo et al. 2017): per model, accuracy and the gap to mean confidence per
    equal-width confidence bin. With ``base`` (a comparison: the base run's bins, by the same panel titles),
    the base run's bars are drawn as dashed outlines over ``bins``' (the new run's) filled ones."""
    fig, axes = _grid(len(bins), per_row=4, height=2.8)
    for ax, (model, b) in zip(axes, bins.items()):
        _reliability_bars(ax, b, filled=True, run="" if base is None else "new")
        if base is not None and model in base:
            _reliability_bars(ax, base[model], filled=False, run="base")
        ax.plot([0, 1], [0, 1], **DENSE_STYLE, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    if base is None:
        _legend(fig, axes)
    else:  # a column per bar kind, the base run above the new run
        by_label = {t: h for h, t in zip(*axes[0].get_legend_handles_labels())}
        order = [f"{kind} ({run})" for kind in ("accuracy", "gap to confidence") for run in ("base", "new")]
        wide = axes[0].get_gridspec().ncols > 1
        order.insert(4 if wide else 2, "perfect calibration")
        fig.legend([by_label[t] for t in order if t in by_label], [t for t in order if t in by_label],
                   loc="lower center", ncol=3 if wide else 2, frameon=False)
    return fig


def roc_curves(rocs: Mapping[str, Mapping[str, Roc]], *, dense: str | None = None,
               base: Mapping[str, Mapping[str, Roc]] | None = None) -> Figure:
    """OOD detection ROC curves: one panel per OOD set, one line per model (the ``dense`` one dashed black).
    With ``base`` (a comparison: the base run's curves, set → model), each model keeps one colour, its base
    curve dashed and its ``rocs`` (new run) curve solid (:data:`RUN_LINES`); ``dense`` is then not used."""
    runs = {"": rocs} if base is None else {"base": base, "new": rocs}
    dense = dense if base is None else None
    labels = list(dict.fromkeys(m for by_set in runs.values() for by_model in by_set.values()
                                for m in by_model if m != dense))
    colors = _method_colors(labels)
    keys = ["base run", "new run", *labels]  # a comparison's legend: the runs' line styles, then the models
    columns = max(1, min(len(keys), 6, int(_width(len(rocs)) / (0.8 + 0.075 * max(map(len, keys))))))
    fig, axes = _grid(len(rocs), legend_rows=2 if base is None else -(-len(keys) // columns))
    for ax, ood_set in zip(axes, rocs):
        for i, (run, by_set) in enumerate(runs.items()):
            for model, roc in by_set.get(ood_set, {}).items():
                style = DENSE_STYLE if model == dense else {"color": colors[model], **(RUN_LINES[i] if run else {})}
                ax.plot(roc["fpr"], roc["tpr"], label=model, **style)
        ax.plot([0, 1], [0, 1], color="0.7", linewidth=0.8)
        ax.set_title(f"OOD: {ood_set}", fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    if base is None:
        _legend(fig, axes)
    else:
        lines = [Line2D([], [], color="0.3", **RUN_LINES[0]), Line2D([], [], color="0.3", **RUN_LINES[1]),
                 *(Line2D([], [], color=colors[m]) for m in labels)]
        fig.legend(lines, keys, loc="lower center", ncol=columns, frameon=False)
    return fig


def overlay_lines(panels: Mapping[str, Mapping[str, Mapping[str, Mapping[float, float]]]], *, xlabel: str,
                  ylabel: str = "") -> Figure:
    """Two runs on shared panels: title → run label → line label → {x: y}; one colour per line label (a
    method, a model, a ratio), one line style per run (:data:`RUN_STYLES`)."""
    labels = list(dict.fromkeys(label for runs in panels.values() for lines in runs.values() for label in lines))
    colors = _method_colors(labels)
    fig, axes = _grid(len(panels))
    handles: dict[tuple[int, int], tuple[Any, str]] = {}  # (line label, run) → (a line, its legend label)
    for ax, (title, runs) in zip(axes, panels.items()):
        for i, ((run, lines), style) in enumerate(zip(runs.items(), RUN_STYLES)):
            for label, points in lines.items():
                xs = sorted(points)
                line, = ax.plot(xs, [points[x] for x in xs], color=colors[label], **style)
                handles.setdefault((labels.index(label), i), (line, f"{label} ({run})"))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ordered = [handles[k] for k in sorted(handles)]  # one column per line label, one row per run
    fig.legend([h for h, _ in ordered], [t for _, t in ordered], loc="lower center", frameon=False,
               ncol=min(6, len(labels)))
    return fig
