"""One file per architecture, built from ranklab.nn blocks: forward(features) -> logits (B,)."""

from ranklab.models.bst import BST
from ranklab.models.dcn import DCN
from ranklab.models.dcnv2 import DCNv2
from ranklab.models.deepfm import DeepFM
from ranklab.models.dien import DIEN
from ranklab.models.din import DIN
from ranklab.models.dnn import DNN
from ranklab.models.fm import FM
from ranklab.models.lr import LR
from ranklab.models.retrieval_baselines import MeanPoolRec, PopRec
from ranklab.models.sasrec import SASRec
from ranklab.models.transact import TransAct
from ranklab.models.wide_deep import WideDeep

__all__ = [
    "BST",
    "DCN",
    "DIEN",
    "DIN",
    "DNN",
    "FM",
    "LR",
    "DCNv2",
    "DeepFM",
    "MeanPoolRec",
    "PopRec",
    "SASRec",
    "TransAct",
    "WideDeep",
]
