"""Sample from a checkpoint: `python sample.py ckpt=runs/train/<run>/checkpoints/last.ckpt sampler=ddim n=64`."""

from difflab.cli.sample import main

if __name__ == "__main__":
    main()  # difflab.utils.entry.hydra_main: conf/sample.yaml under the error contract
