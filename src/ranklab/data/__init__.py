"""Data: schema, readers, preprocessing, cache, in-memory loader, synthetic generators."""

from ranklab.data.batch import Batch, BatchLoader, TensorSplit
from ranklab.data.datamodule import RankDataModule
from ranklab.data.dataset import DataSource, EncodedData, load_or_build
from ranklab.data.schema import OOV, PAD, Feature, Schema
from ranklab.data.sequences import SequenceLog, UserSequences, gather_histories
from ranklab.data.sources import CSVSplits
from ranklab.data.synthetic import SyntheticCTR
from ranklab.data.synthetic_seq import SyntheticSeq

__all__ = [
    "OOV",
    "PAD",
    "Batch",
    "BatchLoader",
    "CSVSplits",
    "DataSource",
    "EncodedData",
    "Feature",
    "RankDataModule",
    "Schema",
    "SequenceLog",
    "SyntheticCTR",
    "SyntheticSeq",
    "TensorSplit",
    "UserSequences",
    "gather_histories",
    "load_or_build",
]
