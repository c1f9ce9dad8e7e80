"""The difflab studio, a local web app: `python studio.py [port=7860] [runs_dir=<folder>] [ckpt_dirs=[<folder>]]`."""

from difflab.studio.server import main

if __name__ == "__main__":
    main()
