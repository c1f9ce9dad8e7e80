"""Read the values images show: `python predict.py ckpt=<regressor ckpt> images=<folder | csv> out=preds.csv`."""

from difflab.cli.predict import main

if __name__ == "__main__":
    main()
