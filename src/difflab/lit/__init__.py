"""LightningModules: glue between nets, diffusion math and samplers."""

from difflab.lit.autoencoder import AutoencoderModule
from difflab.lit.diffusion import DiffusionModule
from difflab.lit.distill import DistillationModule, load_teacher
from difflab.lit.regressor import RegressorModule, load_regressor
from difflab.lit.text import TextDiffusionModule

__all__ = ["AutoencoderModule", "DiffusionModule", "DistillationModule", "RegressorModule", "TextDiffusionModule", "load_regressor", "load_teacher"]
