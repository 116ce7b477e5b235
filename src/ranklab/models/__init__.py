"""One file per architecture, built from ranklab.nn blocks: forward(features) -> logits (B,)."""

from ranklab.models.dcn import DCN
from ranklab.models.dcnv2 import DCNv2
from ranklab.models.deepfm import DeepFM
from ranklab.models.dnn import DNN
from ranklab.models.fm import FM
from ranklab.models.lr import LR
from ranklab.models.retrieval_baselines import MeanPoolRec, PopRec
from ranklab.models.sasrec import SASRec
from ranklab.models.wide_deep import WideDeep

__all__ = [
    "DCN",
    "DNN",
    "FM",
    "LR",
    "DCNv2",
    "DeepFM",
    "MeanPoolRec",
    "PopRec",
    "SASRec",
    "WideDeep",
]
