"""difflab's Python API: what notebooks, the studio and the command line share.

    import difflab

    run = difflab.train(["trainer.max_steps=2000"])            # python train.py trainer.max_steps=2000
    model = difflab.load(run.last_ckpt)                         # or a diffusers / Stable Diffusion folder
    samples = model.sample(16, sampler="DPM++ 2M Karras", steps=20, seed=0)
    samples.grid().save("grid.png"); samples.save("out/")       # the files of python sample.py
    record = model.evaluate("fast", n=500)                      # the metrics.json of python evaluate.py
"""

from difflab.api.config import compose
from difflab.api.models import DiffusionModel, Regressor, load
from difflab.api.samples import Samples
from difflab.api.training import TrainResult, train

__all__ = ["DiffusionModel", "Regressor", "Samples", "TrainResult", "compose", "load", "train"]
