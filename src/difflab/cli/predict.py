"""`python predict.py ckpt=<regressor ckpt> images=<folder | csv> out=preds.csv`: the values each image shows
(`difflab.api.predicting`)."""

from __future__ import annotations

from difflab.api.predicting import run
from difflab.utils.entry import hydra_main


def main() -> None:
    """`predict.py` and the `difflab-predict` console script: the Hydra app of conf/predict.yaml under the error contract."""
    hydra_main("predict", run, __name__)
