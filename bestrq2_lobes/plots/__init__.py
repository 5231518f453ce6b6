"""Pictures of a run and of probe results (``python -m bestrq2_lobes.plots``).

``run_plots`` draws training curves, one clip's masked cells and predictions,
and codebook usage; ``probe_chart`` the probe suite's bar chart.

May import: matplotlib and every other layer of the library.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
