"""Why a run stopped early: what `vae_harness.train` raises, and an interrupted evaluation.

Apart from the loop, so that what reports them (`vae_harness.cli`) need not import it.
"""

from __future__ import annotations

__all__ = [
    "CheckpointSaveFailed",
    "EvaluationInterrupted",
    "TrainingDiverged",
    "TrainingInterrupted",
    "TrainingStopped",
]


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


class EvaluationInterrupted(Exception):
    """Ctrl-C during an evaluation; `checkpoint` (intact) holds the model evaluated."""

    def __init__(self, message: str, checkpoint: str | None):
        super().__init__(message)
        self.checkpoint = checkpoint
