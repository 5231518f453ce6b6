"""A SpeechBrain ``Checkpointer`` whose checkpoints appear atomically.

SpeechBrain 1.1.2 writes ``CKPT.yaml`` first and the parameter files after it, so a
process killed while saving leaves a folder that looks complete and fails (or
loads a truncated file) on resume. Here the whole checkpoint is written in a
hidden temporary folder and renamed into place only when every file is on disk;
a checkpoint is either complete or absent. A failing write (disk full, read-only
output) removes the temporary folder, keeps the previous checkpoints, and raises
a one-line error saying so. Temporary folders left by a killed process are
removed at the next save. The checkpoint folder is created by the first save,
not when the hparams are loaded: a run stopped before it (a rejected argument)
leaves no folder behind.

Under DDP (one node or many, on a shared filesystem) the global main process
(``RANK`` 0) alone writes, deletes and chooses: a save returns on every rank
only once the checkpoint is in place, and the checkpoints to delete, and the
one to recover from, are picked on the main process and broadcast. SpeechBrain
1.1.2 lets each rank list the folder itself, so a rank that lists it a moment
early (or through a lagging network filesystem) makes another number of
collective calls than the main process, and the run hangs; or resumes each
rank from another checkpoint.

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil

from speechbrain.utils.checkpoints import (
    CKPT_PREFIX,
    DEFAULT_SAVE_HOOKS,
    METAFNAME,
    PARAMFILE_EXT,
    Checkpoint,
    Checkpointer,
    get_default_hook,
)
from speechbrain.utils.distributed import (
    ddp_barrier,
    ddp_broadcast,
    if_main_process,
    run_on_main,
)

logger = logging.getLogger(__name__)
TMP_PREFIX = ".partial-"


class CheckpointWriteError(RuntimeError):
    """Writing a checkpoint failed; the earlier checkpoints are intact."""


class AtomicCheckpointer(Checkpointer):
    """``Checkpointer`` that writes to a temporary folder, then renames it.

    Takes the same arguments as ``speechbrain.utils.checkpoints.Checkpointer``.

    Example
    -------
    >>> import torch
    >>> tmp = getfixture("tmpdir")
    >>> layer = torch.nn.Linear(2, 2)
    >>> ckpt = AtomicCheckpointer(tmp, recoverables={"layer": layer})
    >>> saved = ckpt.save_checkpoint(meta={"step": 1})
    >>> sorted(p.name for p in saved.path.iterdir())
    ['CKPT.yaml', 'layer.ckpt']
    >>> [p.basename.startswith(TMP_PREFIX) for p in tmp.listdir()]
    [False]
    >>> lazy = AtomicCheckpointer(tmp / "run" / "save", recoverables={"l": layer})
    >>> (tmp / "run").exists(), lazy.find_checkpoint()
    (False, None)
    """

    def __init__(self, checkpoints_dir, *args, **kwargs):
        # SpeechBrain's constructor makes the folder. Build on one that exists
        # and point at the real one after, so nothing is written before the
        # first save (creating it, then removing it again, raced with the other
        # DDP ranks' constructors)
        super().__init__(os.curdir, *args, **kwargs)
        self.checkpoints_dir = pathlib.Path(checkpoints_dir)

    def list_checkpoints(self):
        """The checkpoints on disk; none before the first save."""
        if not self.checkpoints_dir.is_dir():
            return []
        return super().list_checkpoints()

    def save_checkpoint(
        self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):
        """Saves every recoverable into a new checkpoint folder, atomically."""
        final = partial = saved_meta = None
        if if_main_process():
            self._remove_partials()
            final = (
                self._new_checkpoint_dirpath()
                if name is None
                else self._custom_checkpoint_dirpath(name)
            )
            partial = final.parent / (TMP_PREFIX + final.name)
        final, partial = ddp_broadcast((final, partial), src=0)
        try:
            if if_main_process():
                os.makedirs(partial)
                saved_meta = self._save_checkpoint_metafile(
                    partial / METAFNAME, meta, end_of_epoch
                )
            ddp_barrier()
            for key, obj in self.recoverables.items():
                self._save_one(key, obj, partial / f"{key}{PARAMFILE_EXT}")
            ddp_barrier()
            if if_main_process():
                _fsync_tree(partial)
                os.replace(partial, final)
            ddp_barrier()  # every rank returns once the checkpoint is in place
        except (OSError, RuntimeError) as err:  # torch.save reports ENOSPC as such
            if if_main_process():
                shutil.rmtree(partial, ignore_errors=True)
            previous = [c.path.name for c in self.list_checkpoints()]
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
            raise CheckpointWriteError(
                f"could not write checkpoint {final} ({reason}); "
                f"previous checkpoints are intact: {previous or 'none'}"
            ) from err
        if not if_main_process():
            return None
        logger.log(verbosity, f"Saved a checkpoint in {final}")
        paramfiles = {k: final / f"{k}{PARAMFILE_EXT}" for k in self.recoverables}
        return Checkpoint(final, saved_meta, paramfiles)

    def delete_checkpoints(self, **kwargs):
        """SpeechBrain's ``delete_checkpoints``, decided and done on the main process.

        Takes the same keyword arguments. Every rank must call it (it ends with
        a barrier), as SpeechBrain's.
        """
        run_on_main(super().delete_checkpoints, kwargs=kwargs)

    def recover_if_possible(self, *args, **kwargs):
        """SpeechBrain's ``recover_if_possible``; the main process picks the checkpoint.

        Takes the same arguments. Every rank loads the checkpoint the main
        process found, so all resume from the same step. Every rank must call
        it together (SpeechBrain's ``Brain.fit`` does).
        """
        chosen = run_on_main(self.find_checkpoint, args=args, kwargs=kwargs)
        if chosen is not None:
            self.load_checkpoint(chosen)
        else:
            logger.info("Would load a checkpoint here, but none found yet.")
        return chosen

    def _save_one(self, key, obj, path):
        if key in self.custom_save_hooks:
            self.custom_save_hooks[key](obj, path)
            return
        hook = get_default_hook(obj, DEFAULT_SAVE_HOOKS)
        if hook is None:
            raise RuntimeError(f"Don't know how to save {type(obj)} ({key})")
        hook(obj, path)

    def _remove_partials(self):
        if not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.name.startswith(TMP_PREFIX + CKPT_PREFIX):
                logger.warning("Removing an incomplete checkpoint: %s", path)
                shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(folder) -> None:
    """Flushes every file of a folder to disk (surfaces a full disk here)."""
    for entry in os.scandir(folder):
        with open(entry.path, "rb") as fin:
            os.fsync(fin.fileno())
