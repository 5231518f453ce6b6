"""Bar chart of probe-suite results (linear and kNN per task, domain and overall).

Used by the probe recipe and by ``python -m bestrq2_lobes.plots probe``.

``plot_results(results, path)`` reads ``results.json`` as a dict: the tasks of
its ``tasks`` mapping (``{name: {"linear": ..., "knn": ...}}``) and every flat
``<name>_linear`` / ``<name>_knn`` pair (tasks, ``domain_*``, mean of domains,
overall), so another tool can reuse it. It draws with matplotlib's Agg canvas
directly and leaves the global backend alone.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

PROBES = (("linear probe", "#4C72B0"), ("kNN", "#DD8452"))


def result_bars(results: dict) -> list[tuple[str, float, float, bool]]:
    """(label, linear, kNN, is_summary) of every bar group, tasks first.

    Example
    -------
    >>> res = {"tasks": {"b": {"linear": .1, "knn": .2}}, "overall_linear": .3,
    ...        "overall_knn": .4, "domain_music_linear": .5, "domain_music_knn": .6,
    ...        "a_linear": .7, "a_knn": .8, "b_linear": .1, "b_knn": .2}
    >>> result_bars(res)  # doctest: +NORMALIZE_WHITESPACE
    [('b', 0.1, 0.2, False), ('a', 0.7, 0.8, False), ('music', 0.5, 0.6, True),
     ('overall', 0.3, 0.4, True)]
    """
    bars = {
        name: (float(s["linear"]), float(s["knn"]))
        for name, s in results.get("tasks", {}).items()
    }
    flat = sorted(
        k[: -len("_linear")]
        for k in results
        if k.endswith("_linear") and f"{k[: -len('_linear')]}_knn" in results
    )
    domains = [p for p in flat if p.startswith("domain_")]
    means = [p for p in ("mean_of_domains", "overall") if p in flat]
    for prefix in flat:
        if prefix not in domains and prefix not in means:
            bars.setdefault(prefix, _pair(results, prefix))
    out = [(name, lin, knn, False) for name, (lin, knn) in bars.items()]
    for prefix in domains:
        out.append((prefix[len("domain_") :], *_pair(results, prefix), True))
    for prefix in means:
        out.append((prefix.replace("_", " "), *_pair(results, prefix), True))
    return out


def _pair(results: dict, prefix: str) -> tuple[float, float]:
    return float(results[f"{prefix}_linear"]), float(results[f"{prefix}_knn"])


def plot_results(results: dict, path: str | os.PathLike, title: str = "") -> str:
    """Writes a grouped bar chart (PNG) of probe results.

    Arguments
    ---------
    results : dict
        ``results.json``: a ``tasks`` mapping and/or flat ``<name>_linear`` and
        ``<name>_knn`` keys.
    path : str or PathLike
        Output PNG file.
    title : str
        Chart title.

    Returns
    -------
    str
        The path written.

    Example
    -------
    >>> tmp = getfixture("tmpdir")
    >>> res = {"a_linear": 0.6, "a_knn": 0.4, "overall_linear": 0.6,
    ...        "overall_knn": 0.4}
    >>> out = plot_results(res, tmp / "r.png", "demo")
    >>> open(out, "rb").read(4) == b"\\x89PNG"
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = result_bars(results)
    if not groups:
        raise ValueError("no tasks and no <name>_linear / <name>_knn pairs to plot")
    fig = Figure(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.38
    for column, offset, (label, color) in zip((1, 2), (-0.5, 0.5), PROBES, strict=True):
        values = [group[column] for group in groups]
        xs = [i + offset * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label, color=color)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    num_tasks = sum(1 for group in groups if not group[3])
    if 0 < num_tasks < len(groups):
        ax.axvline(num_tasks - 0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([group[0] for group in groups], rotation=30, ha="right")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("score (accuracy or mAP)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=120)
    return path
