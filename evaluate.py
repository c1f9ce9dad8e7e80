"""Score a checkpoint or a folder of images: `python evaluate.py ckpt=<path> sampler=ddim sampler.steps=50 metrics=full`."""

from difflab.cli.evaluate import main

if __name__ == "__main__":
    main()  # difflab.utils.entry.hydra_main: conf/evaluate.yaml under the error contract
