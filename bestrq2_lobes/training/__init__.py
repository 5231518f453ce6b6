"""What a pretraining run needs around the model.

AdamW parameter groups and the warm-up + cosine schedule (``optim``), atomic
checkpoints (``checkpointing``), argument parsing and DDP shutdown for every
recipe (``run``), seeds derived from a run's position (``seeding``), glibc
memory retention for CPU training (``cpu_memory``), codes used and dead codes
for the logs (``code_usage``), the statistics of ``target_norm: global``
(``target_stats``), the run record that keeps one output folder to one run
(``run_folder``) and a quiet console: SpeechBrain's torchvision notice dropped,
loader workers capped at the CPUs, whole-run progress lines (``console``), and
the precision chosen by the hardware, ``--precision auto`` (``precision``).

May import: torch, SpeechBrain, ``bestrq2_lobes.model`` and
``bestrq2_lobes.data``. Never ``lobe`` or ``downstream``.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""
