"""The report's "What pruning forgets" section: per-class drops, disparate impact, PIEs and the gallery."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from robusteval.analysis import Analysis, pct
from robusteval.analysis.forgetting import Forgetting, impact_lines
from robusteval.report.gallery import gallery_html
from robusteval.report.markup import esc as _e
from robusteval.report.markup import figure as _figure
from robusteval.report.markup import num as _num
from robusteval.report.markup import table as _table

MAX_HEATMAP_CLASSES = 20
"""Classes shown in the heat map: those with the largest drops when a data set has more."""


def class_heatmaps(forgetting: Forgetting, methods: list[str]) -> Figure | None:
    """Clean accuracy drop per class (points) vs prune ratio, one panel per method; * marks a class hit
    significantly harder than the average (disparate impact)."""
    methods = [m for m in methods if forgetting.method_impacts(m)]
    if not methods:
        return None
    worst: dict[str, float] = {}
    for impact in forgetting.impact.values():
        for c in impact.classes:
            worst[c.name] = max(worst.get(c.name, -np.inf), c.drop)
    shown = [c for c in forgetting.classes if c in worst]
    if len(shown) > MAX_HEATMAP_CLASSES:
        keep = set(sorted(shown, key=lambda c: -worst[c])[:MAX_HEATMAP_CLASSES])
        shown = [c for c in shown if c in keep]
    longest = max(len(c) for c in shown)
    height = 0.32 * len(shown) + 1.3
    fig = Figure(figsize=(10.0, height))
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    fig.subplots_adjust(left=min(0.4, (0.3 + 0.075 * longest) / 10), right=0.9, top=1 - 0.35 / height,
                        bottom=0.6 / height, wspace=0.15)
    grids = []
    for method in methods:
        impacts = forgetting.method_impacts(method)
        grid = np.full((len(shown), len(impacts)), np.nan)
        marks = np.zeros_like(grid, dtype=bool)
        for j, impact in enumerate(impacts):
            for c in impact.classes:
                if c.name in shown:
                    grid[shown.index(c.name), j] = 100 * c.drop
                    marks[shown.index(c.name), j] = c.significant
        grids.append((impacts, grid, marks))
    vmax = max(1e-9, *(float(np.nanmax(np.abs(g))) for _, g, _ in grids if np.isfinite(g).any()))
    for ax, method, (impacts, grid, marks) in zip(axes, methods, grids):
        im = ax.imshow(grid, cmap="RdYlGn_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(impacts)), [pct(i.ratio) for i in impacts])
        ax.set_yticks(range(len(shown)), shown if ax is axes[0] else [""] * len(shown))
        ax.set_title(method, fontsize=10)
        if grid.size <= 240:
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.0f}{'*' if marks[i, j] else ''}", ha="center", va="center", fontsize=7)
    fig.colorbar(im, ax=list(axes), label="class accuracy drop (points)", shrink=0.8)
    return fig


def _impact_rows(analysis: Analysis, forgetting: Forgetting) -> list[list[str]]:
    rows = []
    for method in analysis.methods:
        for impact in forgetting.method_impacts(method):
            hit = impact.most_affected()
            lo, hi = impact.max_class_drop_ci
            worst = max(impact.classes, key=lambda c: c.drop, default=None)
            rows.append([_e(impact.model), f"{100 * impact.overall_drop:.1f}",
                         f"{100 * impact.max_class_drop:.1f} ({100 * lo:.1f} to {100 * hi:.1f})"
                         + (f" <small>{_e(worst.name)}</small>" if worst else ""),
                         _e(hit.name) if hit else "–",
                         f"{hit.normalised:+.2f} ({hit.ci[0]:+.2f} to {hit.ci[1]:+.2f})" if hit else "–",
                         _num(round(hit.multiple, 2)) if hit and hit.multiple is not None else "–"])
    return rows


def _pie_rows(forgetting: Forgetting) -> list[list[str]]:
    rows = []
    for p in forgetting.pies:
        top = sorted(p.by_class.items(), key=lambda kv: -kv[1])[:3]
        rows.append([pct(p.ratio), _e(", ".join(p.members)), f"{len(p.index)}", f"{100 * len(p.index) / p.n:.1f}%",
                     _e(", ".join(f"{name} {count}" for name, count in top)) or "–",
                     _num(None if p.baseline_accuracy is None else round(100 * p.baseline_accuracy, 1)),
                     _num(None if p.pruned_accuracy is None else round(100 * p.pruned_accuracy, 1))])
    return rows


def forgetting_section(analysis: Analysis) -> str:
    """The section's HTML; empty for a run without samples.npz or without pruned members."""
    forgetting = analysis.forgetting
    if forgetting is None or not forgetting.impact:
        return ""
    base = _e(forgetting.baseline)
    out = ('<p class="note">Who pays for the pruning (Hooker et al. 2019, "What Do Compressed Deep Neural Networks '
           f'Forget?"), on the clean data, against {base}.</p>')
    lines = impact_lines(forgetting, analysis.methods)
    out += '<ul class="verdict">' + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>" if lines else ""
    fig = class_heatmaps(forgetting, analysis.methods)
    if fig is not None:
        out += "<h3>Accuracy drop per class</h3>" + _figure(fig, "per-class accuracy drop heatmap")
    out += ("<h3>Disparate impact</h3>"
            '<p class="note">Normalised recall difference: the change of the class\'s accuracy minus the change '
            "of top-1 accuracy, as fractions (negative: the class loses more than the average). Significant: its "
            "class-stratified paired-bootstrap interval, Bonferroni-corrected over classes, lies below 0 "
            "(* in the heat map). Multiple: the class's drop over the overall drop. Largest class drop: points, "
            "with its 95% bootstrap interval.</p>"
            + _table(["model", "overall drop (points)", "largest class drop (points)", "most affected class",
                      "normalised recall difference", "multiple"], _impact_rows(analysis, forgetting)))
    if forgetting.pies:
        out += ("<h3>Pruning identified exemplars</h3>"
                f'<p class="note">Clean inputs where the modal prediction of the pruned members at a ratio (one '
                f"per method) differs from {base}'s prediction; accuracies of {base} and of the modal pruned "
                "prediction on them.</p>"
                + _table(["ratio", "members", "PIEs", "share", "most frequent classes", f"{base} accuracy (%)",
                          "pruned accuracy (%)"], _pie_rows(forgetting)))
    gallery = gallery_html(forgetting)
    return out + ("<h3>Forgotten inputs</h3>" + gallery if gallery else "")
