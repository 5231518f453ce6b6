"""Sound event detection metrics: sed_eval event/segment F1 and PSDS1.

* Event-based F1 (``sed_eval.sound_event.EventBasedMetrics``): a detection
  matches a reference event of its class when the onsets differ by at most
  ``collar`` seconds and the offsets by at most ``max(collar, offset_ratio x
  reference length)``. ``event_f1`` is the class-wise (macro) average, as in
  DESED / DCASE task 4; ``event_f1_micro`` the overall one.
* Segment-based F1 (``SegmentBasedMetrics``) on fixed segments (1 s): ``segment_f1``
  is the overall (micro) F1 as in DCASE 2016-2017, ``segment_f1_macro`` the
  class-wise average, ``segment_error_rate`` the overall error rate.
* PSDS1 (``sed_scores_eval.intersection_based.psds``, DCASE 2021-2023 scenario 1:
  DTC = GTC = 0.7, no cross-trigger term, alpha_st = 1, max eFPR 100 per hour) on
  the median-filtered frame probabilities (threshold-free).

A class with neither reference events nor detections is left out of the macro
averages (sed_eval's ``nanmean``); a metric that cannot be defined is ``None``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import importlib
import math
import sys
import types
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sed_labels import Event

PSDS1 = {
    "dtc_threshold": 0.7,
    "gtc_threshold": 0.7,
    "cttc_threshold": None,
    "alpha_ct": 0.0,
    "alpha_st": 1.0,
    "max_efpr": 100.0,
}


def import_sed_eval():
    """Imports sed_eval (and dcase_util) even where ``pkg_resources`` is gone.

    dcase_util 0.2.x imports ``pkg_resources`` at import time but uses it only
    in an installation-check helper; setuptools >= 82 no longer ships it
    (DCASE-REPO/dcase_util#46). An empty placeholder module is registered in
    that case, for this process only, so that the import works.
    """
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.__doc__ = "placeholder: dcase_util imports it but the metrics need none"
        sys.modules.setdefault("pkg_resources", stub)
    return importlib.import_module("sed_eval")


def _writable_onset_offset_curves(statistics) -> None:
    """Lets sed_scores_eval 0.0.4 run with pandas >= 3 (process-local fix).

    pandas 3 returns read-only arrays from ``DataFrame.to_numpy()`` (copy on
    write) and the package's Cython ``onset_offset_curves`` rejects read-only
    buffers ("buffer source array is read-only"). The wrapper passes writable
    copies; the computation is unchanged.
    """
    curves = statistics.onset_offset_curves
    if getattr(curves, "copies_inputs", False):
        return

    def onset_offset_curves(scores, timestamps, change_point_candidates=None):
        if change_point_candidates is not None:
            change_point_candidates = np.array(change_point_candidates)
        return curves(np.array(scores), np.array(timestamps), change_point_candidates)

    onset_offset_curves.copies_inputs = True
    statistics.onset_offset_curves = onset_offset_curves


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _event_dicts(filename: str, events: Sequence[Event]) -> list[dict]:
    return [
        {
            "filename": filename,
            "onset": e.onset,
            "offset": e.offset,
            "event_label": e.label,
        }
        for e in events
    ]


def sed_eval_metrics(
    reference: Mapping[str, Sequence[Event]],
    estimated: Mapping[str, Sequence[Event]],
    durations: Mapping[str, float],
    labels: Sequence[str],
    collar: float = 0.5,
    offset_ratio: float = 0.2,
    segment_s: float = 1.0,
) -> dict:
    """Event-based and segment-based scores with sed_eval.

    Arguments
    ---------
    reference, estimated : mapping
        ``filename -> events`` (the same files in both; missing = no events).
    durations : mapping
        ``filename -> duration`` in seconds (segments cover the whole clip).
    labels : sequence of str
        The label set.
    collar : float
        Onset collar in seconds (and the least offset collar).
    offset_ratio : float
        Offset collar as a fraction of the reference event's length.
    segment_s : float
        Segment length of the segment-based metrics.

    Returns
    -------
    dict
        ``event_f1``, ``event_f1_micro``, ``segment_f1``, ``segment_f1_macro``,
        ``segment_error_rate`` (floats, or None when undefined).

    Example
    -------
    >>> ref = {"a": [Event(1.0, 3.0, "dog")]}
    >>> est = {"a": [Event(1.3, 3.2, "dog"), Event(6.0, 7.0, "cat")]}
    >>> m = sed_eval_metrics(ref, est, {"a": 10.0}, ["cat", "dog"])
    >>> round(m["event_f1_micro"], 3), round(m["segment_f1"], 3)
    (0.667, 0.667)
    """
    sed_eval = import_sed_eval()
    labels = list(labels)
    event = sed_eval.sound_event.EventBasedMetrics(
        event_label_list=labels,
        t_collar=collar,
        percentage_of_length=offset_ratio,
        empty_system_output_handling="zero_score",
    )
    segment = sed_eval.sound_event.SegmentBasedMetrics(
        event_label_list=labels,
        time_resolution=segment_s,
    )
    # sed_eval 0.2.1 accepts this only for event-based metrics; without it a
    # class (or a system) with no output has an undefined F1 instead of 0
    segment.empty_system_output_handling = "zero_score"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of no classes
        for filename in sorted(durations):
            ref = _event_dicts(filename, reference.get(filename, []))
            est = _event_dicts(filename, estimated.get(filename, []))
            event.evaluate(ref, est)
            segment.evaluate(ref, est, evaluated_length_seconds=durations[filename])
        ev_macro = event.results_class_wise_average_metrics()
        ev_micro = event.results_overall_metrics()
        seg_micro = segment.results_overall_metrics()
        seg_macro = segment.results_class_wise_average_metrics()
    return {
        "event_f1": _finite(ev_macro["f_measure"]["f_measure"]),
        "event_f1_micro": _finite(ev_micro["f_measure"]["f_measure"]),
        "segment_f1": _finite(seg_micro["f_measure"]["f_measure"]),
        "segment_f1_macro": _finite(seg_macro["f_measure"]["f_measure"]),
        "segment_error_rate": _finite(seg_micro["error_rate"]["error_rate"]),
    }


def merge_overlapping(events: Sequence[Event]) -> list[tuple[float, float, str]]:
    """Joins overlapping or touching events of a class (sed_scores_eval refuses them).

    Example
    -------
    >>> merge_overlapping([Event(1, 3, "a"), Event(2, 4, "a"), Event(0, 1, "b")])
    [(0, 1, 'b'), (1, 4, 'a')]
    """
    merged: list[list] = []
    for e in sorted(events, key=lambda e: (e.label, e.onset, e.offset)):
        if merged and merged[-1][2] == e.label and e.onset <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e.offset)
        else:
            merged.append([e.onset, e.offset, e.label])
    return sorted((on, off, label) for on, off, label in merged)


def psds1(
    scores: Mapping[str, np.ndarray],
    hop_s: float,
    reference: Mapping[str, Sequence[Event]],
    durations: Mapping[str, float],
    labels: Sequence[str],
) -> tuple[float, list[str]]:
    """PSDS scenario 1 of frame scores with sed_scores_eval.

    PSDS is undefined for a class without reference events: such classes are
    left out (and returned, so that the caller can say so). Overlapping
    reference events of one class are joined first.

    Arguments
    ---------
    scores : mapping
        ``filename -> (frames, classes)`` probabilities; frame ``k`` covers
        ``[k hop, (k + 1) hop)`` (the last one cut at the clip's end).
    hop_s : float
        Frame hop in seconds.
    reference : mapping
        ``filename -> events``.
    durations : mapping
        ``filename -> duration`` in seconds.
    labels : sequence of str
        Class of each score column.

    Returns
    -------
    psds : float
        PSDS1 in [0, 1] over the classes with reference events.
    left_out : list of str
        Classes without reference events.

    Example
    -------
    >>> probs = np.zeros((16, 2)); probs[2:5, 1] = 0.9
    >>> ref = {"a": [Event(1.25, 3.125, "dog")]}
    >>> psds1({"a": probs}, 0.625, ref, {"a": 10.0}, ["cat", "dog"])
    (1.0, ['cat'])
    """
    import_sed_eval()  # sed_scores_eval imports sed_eval
    from sed_scores_eval.base_modules import statistics
    from sed_scores_eval.base_modules.scores import create_score_dataframe
    from sed_scores_eval.intersection_based import psds

    _writable_onset_offset_curves(statistics)
    present = {e.label for events in reference.values() for e in events}
    keep = [i for i, label in enumerate(labels) if label in present]
    if not keep:
        raise ValueError("PSDS needs reference events: the set has none")
    frames = {}
    for filename, probs in scores.items():
        stamps = np.arange(len(probs) + 1) * hop_s
        stamps[-1] = min(stamps[-1], float(durations[filename]))
        frames[filename] = create_score_dataframe(
            np.asarray(probs, dtype=np.float64)[:, keep],
            stamps,
            [labels[i] for i in keep],
        )
    truth = {f: merge_overlapping(reference.get(f, [])) for f in frames}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value, *_ = psds(
            frames,
            truth,
            {f: float(durations[f]) for f in frames},
            unit_of_time="hour",
            **PSDS1,
        )
    left_out = [label for label in labels if label not in present]
    return float(value), left_out
