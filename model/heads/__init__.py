"""DCP-SFR heads: small trainable modules on top of the frozen backbones (SPEC.md)."""

from model.heads.acl import ACL, CrossAttentionBlock
from model.heads.caca import CACA, Amplifier, PromptLearner
from model.heads.dcpsfr import DCPSFRHeads, HeadOutputs
from model.heads.image_score import ImageScoreHead, top_fraction_mean
from model.heads.ssr import SegmentationCalibration, fuse_maps

__all__ = [
    "ACL",
    "CACA",
    "Amplifier",
    "CrossAttentionBlock",
    "DCPSFRHeads",
    "HeadOutputs",
    "ImageScoreHead",
    "PromptLearner",
    "SegmentationCalibration",
    "fuse_maps",
    "top_fraction_mean",
]
