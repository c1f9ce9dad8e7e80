"""Train a diffusion model: `python train.py model=ddim data=mnist trainer.max_steps=20000`."""

from difflab.cli.train import main

if __name__ == "__main__":
    main()  # difflab.utils.entry.hydra_main: conf/train.yaml under the error contract
