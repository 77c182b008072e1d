"""Why training stopped before `num_steps`: the exceptions `tfp_iaf.vae.train` raises.

Apart from the loop, so that what reports them (`tfp_iaf.vae.cli`) need not import it.
"""

from __future__ import annotations

__all__ = ["CheckpointSaveFailed", "TrainingDiverged", "TrainingInterrupted", "TrainingStopped"]


class TrainingStopped(Exception):
    """Training stopped before `num_steps`; `step` and `checkpoint` say where it can resume."""

    def __init__(self, message: str, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


class TrainingInterrupted(TrainingStopped):
    """SIGINT or SIGTERM: a checkpoint was saved at `step`; `signum` is the signal."""

    def __init__(self, message: str, step: int, checkpoint: str | None, signum: int):
        super().__init__(message, step, checkpoint)
        self.signum = signum


class TrainingDiverged(TrainingStopped):
    """A logged quantity became non-finite at `step`; `checkpoint` is the last good one."""


class CheckpointSaveFailed(TrainingStopped):
    """The checkpoint of `step` could not be written; `checkpoint` is the newest intact one."""
