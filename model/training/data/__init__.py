"""Datasets (MVTec AD, VisA) and synthetic anomalies for training and evaluation."""

from model.training.data.datasets import (
    AnomalyDataset,
    DatasetError,
    MVTecAD,
    TestSample,
    VisA,
    load_image,
    load_mask,
    open_dataset,
)
from model.training.data.synth import (
    ANOMALIES,
    PARTS,
    SynthesisError,
    cut_paste,
    perlin_blend,
    perlin_mask,
    perlin_noise,
    render_part,
    write_synthetic_dataset,
)

__all__ = [
    "ANOMALIES",
    "PARTS",
    "AnomalyDataset",
    "DatasetError",
    "MVTecAD",
    "SynthesisError",
    "TestSample",
    "VisA",
    "cut_paste",
    "load_image",
    "load_mask",
    "open_dataset",
    "perlin_blend",
    "perlin_mask",
    "perlin_noise",
    "render_part",
    "write_synthetic_dataset",
]
