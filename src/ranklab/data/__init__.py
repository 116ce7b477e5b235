"""Data: schema, readers, preprocessing, cache, in-memory loader, synthetic generators."""

from ranklab.data.batch import Batch, BatchLoader, Ragged, TensorSplit
from ranklab.data.datamodule import RankDataModule
from ranklab.data.dataset import DataSource, EncodedData, load_or_build
from ranklab.data.schema import FIRST_ID, OOV, PAD, Feature, LabelSpec, Schema
from ranklab.data.sequences import SequenceLog, UserSequences, gather_histories
from ranklab.data.sources import CSVSplits
from ranklab.data.synthetic import SyntheticCTR
from ranklab.data.synthetic_mtl import SyntheticMTL
from ranklab.data.synthetic_seq import SyntheticSeq

__all__ = [
    "FIRST_ID",
    "OOV",
    "PAD",
    "Batch",
    "BatchLoader",
    "CSVSplits",
    "DataSource",
    "EncodedData",
    "Feature",
    "LabelSpec",
    "Ragged",
    "RankDataModule",
    "Schema",
    "SequenceLog",
    "SyntheticCTR",
    "SyntheticMTL",
    "SyntheticSeq",
    "TensorSplit",
    "UserSequences",
    "gather_histories",
    "load_or_build",
]
