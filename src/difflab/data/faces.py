"""Face data sets of the latent-diffusion paper as image-folder presets: FFHQ and CelebA (a folder or a .zip).

Both are read by `ImageFolderDataModule` (any folder or zip of images, centre crop, horizontal flip,
`resolution` 64/128/256); the presets only name the data set and, when the files are missing, where
to put them and the official sources.
"""

from __future__ import annotations

from difflab.data.image_folder import ImageFolderDataModule

FFHQ_HOW_TO_GET = (
    "FFHQ (Karras et al. 2019) is distributed by NVIDIA at https://github.com/NVlabs/ffhq-dataset "
    "(70,000 PNGs; images1024x1024 or thumbnails128x128, CC BY-NC-SA 4.0). Download it with the repository's "
    "download_ffhq.py (e.g. `python download_ffhq.py --thumbs` for 128x128) and put the images folder, or a .zip "
    "of it, at that path, or set data.root=/path/to/ffhq."
)
CELEBA_HOW_TO_GET = (
    "CelebA (Liu et al. 2015) is distributed at https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
    "(img_align_celeba.zip, 202,599 aligned JPEGs; non-commercial research use). Put img_align_celeba.zip or its "
    "extracted folder at that path, or set data.root=/path/to/img_align_celeba."
)


class FFHQDataModule(ImageFolderDataModule):
    """FFHQ from a folder or zip of its PNGs."""

    how_to_get = FFHQ_HOW_TO_GET


class CelebADataModule(ImageFolderDataModule):
    """CelebA (aligned) from img_align_celeba.zip or its folder; the 178x218 images are centre-cropped."""

    how_to_get = CELEBA_HOW_TO_GET
