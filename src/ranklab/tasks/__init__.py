"""LightningModules, one concern per file: ``base`` (optimiser, schedule, regularisers,
history), ``ranking`` (per-label losses and metrics), ``retrieval`` (next-item training with a
loss module; evaluation by :mod:`ranklab.evaluation`). Losses and negative samplers live in
:mod:`ranklab.losses` and :mod:`ranklab.samplers`."""

from ranklab.tasks.base import BaseTask, split_parameters
from ranklab.tasks.ranking import RankingTask, split_output
from ranklab.tasks.retrieval import RetrievalTask

__all__ = ["BaseTask", "RankingTask", "RetrievalTask", "split_output", "split_parameters"]
