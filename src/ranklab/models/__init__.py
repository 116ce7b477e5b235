"""One file per architecture, built from ranklab.nn blocks; the contract is in models/base.py:
forward(features) -> logits (B,) for one label, {label: (B,)} for several."""

from ranklab.models.autoint import AutoInt
from ranklab.models.bst import BST
from ranklab.models.dcn import DCN
from ranklab.models.dcnv2 import DCNv2
from ranklab.models.deepfm import DeepFM
from ranklab.models.dien import DIEN
from ranklab.models.din import DIN
from ranklab.models.dlrm import DLRM
from ranklab.models.dnn import DNN
from ranklab.models.esmm import ESMM
from ranklab.models.fibinet import FiBiNET
from ranklab.models.finalmlp import FinalMLP
from ranklab.models.fm import FM
from ranklab.models.lr import LR
from ranklab.models.masknet import MaskNet
from ranklab.models.mmoe import MMoE
from ranklab.models.ple import PLE
from ranklab.models.retrieval_baselines import MeanPoolRec, PopRec
from ranklab.models.sasrec import SASRec
from ranklab.models.shared_bottom import SharedBottom
from ranklab.models.transact import TransAct
from ranklab.models.wide_deep import WideDeep
from ranklab.models.xdeepfm import XDeepFM

__all__ = [
    "BST",
    "DCN",
    "DIEN",
    "DIN",
    "DLRM",
    "DNN",
    "ESMM",
    "FM",
    "LR",
    "PLE",
    "AutoInt",
    "DCNv2",
    "DeepFM",
    "FiBiNET",
    "FinalMLP",
    "MMoE",
    "MaskNet",
    "MeanPoolRec",
    "PopRec",
    "SASRec",
    "SharedBottom",
    "TransAct",
    "WideDeep",
    "XDeepFM",
]
