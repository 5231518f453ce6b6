"""Scores of the probe suite: per task, per domain, overall; JSON keys and Markdown.

Flat result keys (``results.json``): ``<task>_linear``, ``<task>_knn``,
``domain_<domain>_linear`` / ``_knn`` (weighted mean of the domain's tasks),
``mean_of_domains_linear`` / ``_knn`` (plain mean of the domain means) and
``overall_linear`` / ``overall_knn`` (weighted mean over all tasks), and
``overall_valid_linear`` (the same mean of the linear probes' best valid
scores, when every task has a valid split: what to choose settings by). Besides
them, ``tasks`` maps each task to its details and scores (the layout that
``python -m bestrq2_lobes.plots probe results.json out.png`` reads).

With ``--probe_layers all`` each task also has ``layers_linear`` (the test score
of a linear probe on each hidden state), ``layers_valid``, ``best_layer`` (by
the valid score) and ``best_layer_linear``; the flat keys then add
``overall_linear_layers`` (the weighted mean curve over tasks) and
``overall_best_layer_linear``. The last-layer ``overall_linear`` stays the
headline.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import os

from probe_eval import weighted_mean

from bestrq2_lobes.data.files import atomic_open

PROBES = ("linear", "knn")


def aggregate(records: list[dict]) -> dict:
    """Flat results of per-task records.

    Arguments
    ---------
    records : list of dict
        One per task with ``name``, ``domain``, ``weight``, ``linear``, ``knn``.

    Returns
    -------
    dict
        Flat ``{key: score}`` (see the module docstring).

    Example
    -------
    >>> recs = [dict(name="a", domain="speech", weight=1.0, linear=0.5, knn=0.4),
    ...         dict(name="b", domain="music", weight=3.0, linear=1.0, knn=0.8)]
    >>> res = aggregate(recs)
    >>> [round(res[k], 4) for k in ("overall_linear", "mean_of_domains_linear",
    ...                             "domain_music_knn")]
    [0.875, 0.75, 0.8]
    """
    results = {}
    for rec in records:
        for probe in PROBES:
            results[f"{rec['name']}_{probe}"] = rec[probe]
    domains = sorted({rec["domain"] for rec in records})
    for probe in PROBES:
        for domain in domains:
            recs = [r for r in records if r["domain"] == domain]
            results[f"domain_{domain}_{probe}"] = weighted_mean(
                [r[probe] for r in recs], [r["weight"] for r in recs]
            )
        results[f"mean_of_domains_{probe}"] = sum(
            results[f"domain_{d}_{probe}"] for d in domains
        ) / len(domains)
        results[f"overall_{probe}"] = weighted_mean(
            [r[probe] for r in records], [r["weight"] for r in records]
        )
    valid = [rec.get("valid_linear") for rec in records]
    if records and all(v is not None for v in valid):  # a signal to choose by
        results["overall_valid_linear"] = weighted_mean(
            valid, [r["weight"] for r in records]
        )
    results.update(layer_curve(records))
    return results


def layer_curve(records: list[dict]) -> dict:
    """Overall per-layer scores and best-layer score, when every task has them.

    Example
    -------
    >>> recs = [dict(weight=1.0, layers_linear=[0.25, 0.5], best_layer=1,
    ...              best_layer_linear=0.5),
    ...         dict(weight=1.0, layers_linear=[0.5, 0.25], best_layer=0,
    ...              best_layer_linear=0.5)]
    >>> layer_curve(recs)
    {'overall_linear_layers': [0.375, 0.375], 'overall_best_layer_linear': 0.5}
    >>> layer_curve([dict(weight=1.0)])
    {}
    """
    if not records or not all("layers_linear" in r for r in records):
        return {}
    weights = [r["weight"] for r in records]
    num_layers = min(len(r["layers_linear"]) for r in records)
    out = {
        "overall_linear_layers": [
            weighted_mean([r["layers_linear"][i] for r in records], weights)
            for i in range(num_layers)
        ]
    }
    if all(r.get("best_layer") is not None for r in records):
        out["overall_best_layer_linear"] = weighted_mean(
            [r["best_layer_linear"] for r in records], weights
        )
    return out


def results_json(records: list[dict]) -> dict:
    """``results.json``: the flat keys of ``aggregate`` plus a ``tasks`` mapping.

    Example
    -------
    >>> recs = [dict(name="a", domain="speech", weight=1.0, linear=0.5, knn=0.4,
    ...              type="multiclass", metric="accuracy", num_classes=3,
    ...              sizes={"train": 10, "test": 5}, epoch=7)]
    >>> res = results_json(recs)
    >>> res["tasks"]["a"]["linear"], res["a_knn"], res["overall_linear"]
    (0.5, 0.4, 0.5)
    """
    tasks = {
        rec["name"]: {k: v for k, v in rec.items() if k != "name"} for rec in records
    }
    return {**aggregate(records), "tasks": tasks}


def markdown_table(records: list[dict], results: dict, header: list[str]) -> str:
    """The results as Markdown: a per-task table, then the means.

    Example
    -------
    >>> recs = [dict(name="a", domain="speech", weight=1.0, linear=0.5, knn=0.4,
    ...              type="multiclass", metric="accuracy", num_classes=3,
    ...              sizes={"train": 10, "valid": 0, "test": 5}, epoch=7)]
    >>> print(markdown_table(recs, aggregate(recs), ["# Probe"]))  # doctest: +ELLIPSIS
    # Probe
    <BLANKLINE>
    | task | domain | type | metric | classes | train/valid/test | weight | ...
    |---|---|---|---|---|---|---|---|---|---|
    | a | speech | multiclass | accuracy | 3 | 10/0/5 | 1 | 7 | 0.500 | 0.400 |
    <BLANKLINE>
    | mean | linear | kNN |
    |---|---|---|
    | domain speech | 0.500 | 0.400 |
    | mean of domains | 0.500 | 0.400 |
    | **overall (weighted)** | **0.500** | **0.400** |
    """
    lines = [*header, ""]
    lines.append(
        "| task | domain | type | metric | classes | train/valid/test | weight "
        "| probe epoch | linear | kNN |"
    )
    lines.append("|" + "---|" * 10)
    for rec in records:
        sizes = "/".join(
            str(rec["sizes"].get(s, 0)) for s in ("train", "valid", "test")
        )
        name = rec["name"] + (f" ({rec['protocol']})" if rec.get("protocol") else "")
        lines.append(
            f"| {name} | {rec['domain']} | {rec['type']} | {rec['metric']} "
            f"| {rec['num_classes']} | {sizes} | {rec['weight']:g} | {rec['epoch']} "
            f"| {rec['linear']:.3f} | {rec['knn']:.3f} |"
        )
    lines += ["", "| mean | linear | kNN |", "|---|---|---|"]
    domains = sorted({rec["domain"] for rec in records})
    for domain in domains:
        key = f"domain_{domain}"
        lines.append(
            f"| domain {domain} | {results[key + '_linear']:.3f} "
            f"| {results[key + '_knn']:.3f} |"
        )
    lines.append(
        f"| mean of domains | {results['mean_of_domains_linear']:.3f} "
        f"| {results['mean_of_domains_knn']:.3f} |"
    )
    lines.append(
        f"| **overall (weighted)** | **{results['overall_linear']:.3f}** "
        f"| **{results['overall_knn']:.3f}** |"
    )
    return "\n".join(lines + layer_table(records, results))


def layer_table(records: list[dict], results: dict) -> list[str]:
    """Markdown lines of the per-layer linear scores (none without them).

    Example
    -------
    >>> recs = [dict(name="a", weight=1.0, layers_linear=[0.2, 0.4],
    ...              layers_valid=[0.1, 0.3], best_layer=1, best_layer_linear=0.4)]
    >>> print("\\n".join(layer_table(recs, layer_curve(recs))))
    <BLANKLINE>
    Linear probe on each hidden state (0: the patch embeddings; the last is the headline), test scores; **bold**: the best layer by the valid score.
    <BLANKLINE>
    | task | 0 | 1 | best layer (valid) |
    |---|---|---|---|
    | a | 0.200 | **0.400** | 1: 0.400 |
    | overall | 0.200 | 0.400 | 0.400 |
    """  # noqa: E501
    if "overall_linear_layers" not in results:
        return []
    curve = results["overall_linear_layers"]
    lines = [
        "",
        "Linear probe on each hidden state (0: the patch embeddings; the last is "
        "the headline), test scores; **bold**: the best layer by the valid score.",
        "",
        "| task | " + " | ".join(str(i) for i in range(len(curve))) + " | best layer "
        "(valid) |",
        "|" + "---|" * (len(curve) + 2),
    ]
    for rec in records:
        best = rec.get("best_layer")
        cells = [
            f"**{score:.3f}**" if i == best else f"{score:.3f}"
            for i, score in enumerate(rec["layers_linear"][: len(curve)])
        ]
        chosen = "-" if best is None else f"{best}: {rec['best_layer_linear']:.3f}"
        lines.append(f"| {rec['name']} | " + " | ".join(cells) + f" | {chosen} |")
    overall = results.get("overall_best_layer_linear")
    lines.append(
        "| overall | "
        + " | ".join(f"{score:.3f}" for score in curve)
        + f" | {'-' if overall is None else f'{overall:.3f}'} |"
    )
    return lines


def write_markdown(path: str | os.PathLike, text: str) -> None:
    """Writes the Markdown report atomically."""
    with atomic_open(path) as fout:
        fout.write(text + "\n")


def summary_line(results: dict, num_tasks: int, folder: str) -> str:
    """The final one-line summary.

    Example
    -------
    >>> res = {"overall_linear": 0.5, "overall_knn": 0.25,
    ...        "domain_music_linear": 0.5, "domain_music_knn": 0.25}
    >>> summary_line(res, 1, "out")
    'Probe suite finished: 1 tasks, overall linear 0.500 kNN 0.250 (music 0.500/0.250), results in out/results.md'
    """  # noqa: E501
    domains = sorted(
        k[len("domain_") : -len("_linear")]
        for k in results
        if k.startswith("domain_") and k.endswith("_linear")
    )
    per_domain = ", ".join(
        f"{d} {results[f'domain_{d}_linear']:.3f}/{results[f'domain_{d}_knn']:.3f}"
        for d in domains
    )
    best = results.get("overall_best_layer_linear")
    best = "" if best is None else f", best layer by valid {best:.3f}"
    return (
        f"Probe suite finished: {num_tasks} tasks, overall linear "
        f"{results['overall_linear']:.3f} kNN {results['overall_knn']:.3f} "
        f"({per_domain}){best}, results in {os.path.join(folder, 'results.md')}"
    )
