"""SPIN's network modules: GA-SPIN transform, ResNet32 backbone, cascaded BiLSTM neck, attention head."""

from spinrec.models.attention_head import SPINAttentionHead
from spinrec.models.gaspin import GASPINTransformer, SPTransformerNetwork
from spinrec.models.resnet32 import ResNet32
from spinrec.models.sequence import SequenceEncoder
from spinrec.models.spin import SPIN, SPINConfig, spin_r32
from spinrec.models.tps import TPSGridGenerator

__all__ = [
    "GASPINTransformer",
    "ResNet32",
    "SPIN",
    "SPINAttentionHead",
    "SPINConfig",
    "SPTransformerNetwork",
    "SequenceEncoder",
    "TPSGridGenerator",
    "spin_r32",
]
