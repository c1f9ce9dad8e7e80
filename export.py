"""Export a checkpoint to diffusers: `python export.py ckpt=runs/train/<run>/checkpoints/last.ckpt out=<folder>`."""

from difflab.cli.export import main

if __name__ == "__main__":
    main()  # difflab.utils.entry.hydra_main: conf/export.yaml under the error contract
