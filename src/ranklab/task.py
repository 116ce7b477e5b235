"""The tasks moved to :mod:`ranklab.tasks` (one concern per file); this name stays so that
configs and checkpoints that say ``ranklab.task.RankingTask`` keep working."""

from ranklab.evaluation import bucket_index, bucket_labels
from ranklab.tasks import BaseTask, RankingTask, RetrievalTask, split_parameters

__all__ = [
    "BaseTask",
    "RankingTask",
    "RetrievalTask",
    "bucket_index",
    "bucket_labels",
    "split_parameters",
]
