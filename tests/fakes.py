"""Tiny fake data sets in the real on-disk formats, shared by the data, config and CLI tests."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO.parent / "shared" / "assets"



def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(folder: Path, n_train: int = 40, n_test: int = 20, gz: bool = True) -> Path:
    """MNIST-format IDX files with random images and labels cycling 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n:
            images = rng.integers(0, 256, (n, 28, 28))
            write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return folder


def fake_cifar(root: Path, per_batch: int = 6) -> Path:
    """A cifar-10-batches-py folder in the release's pickle format, random pixels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [b"plane", b"car", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"ok"]
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        data = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"labels": [int(i % 10) for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(data, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    return folder


def fake_images(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> Path:
    """Small PNG/JPEG files of assorted sizes and modes in one subfolder per class."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = 20 + 3 * i, 14 + 2 * i  # non-square, varying
            array = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
            img = Image.fromarray(array, "RGBA").convert(["RGBA", "RGB", "L"][i % 3])
            img.save(root / c / (f"{i}.jpg" if i % 3 == 1 else f"{i}.png"))
    (root / ".DS_Store").write_bytes(b"junk")  # hidden files are ignored
    (root / "notes.txt").write_text("not an image")
    return root


# ---- tiny random stand-ins for the metric networks (module-level: picklable for ddp_spawn) ----

class TinyExtractor:
    """A fixed random conv feature map: uint8-like images -> (features [N, 16], logits [N, 10]), float32."""

    weights_hash = "tiny0000"
    no_classifier = None  # its logits come from a random head: IS is computable

    def __init__(self) -> None:
        import torch

        gen = torch.Generator().manual_seed(0)
        self.conv = torch.randn(16, 3, 3, 3, generator=gen) * 0.3
        self.head = torch.randn(10, 16, generator=gen)

    def __call__(self, images):  # noqa: ANN001, ANN204
        import torch.nn.functional as F

        from difflab.metrics.inception import to_uint8_rgb

        x = to_uint8_rgb(images).float() / 127.5 - 1.0
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
        h = F.relu(F.conv2d(x.double(), self.conv.double(), padding=1)).mean((2, 3))
        return h.float(), (h @ self.head.double().T).float()


def tiny_extractor() -> TinyExtractor:
    return TinyExtractor()


def tiny_lpips():  # noqa: ANN201
    """(distance net, hash): mean squared difference of 8-bit images, 0 exactly for identical inputs."""

    def distance(a, b):  # noqa: ANN001, ANN202
        return ((a - b) ** 2).flatten(1).mean(1)

    return distance, "tinylpips"


def tiny_networks():  # noqa: ANN201
    from difflab.evaluation import Networks

    return Networks(inception=tiny_extractor, lpips=tiny_lpips)


# ---- tiny random Stable-Diffusion-shaped components, saved in diffusers' folder layout ----

def byte_level_clip_tokenizer(folder: Path) -> Path:
    """A CLIP BPE tokenizer with one merge: one token per byte-level character (and its word-final `</w>` form)
    plus CLIP's start/end tokens. Stands in for the real vocabulary when ../shared/assets lacks it: prompts
    tokenize into characters, so every text path still runs (with longer token sequences)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    # GPT-2/CLIP byte-level alphabet: printable bytes stand for themselves, the others map to chr(256 + k)
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + k) for k in range(len(others))]
    tokens = chars + [c + "</w>" for c in chars] + ["at</w>", "<|startoftext|>", "<|endoftext|>"]
    _write_whole(folder / "vocab.json", json.dumps({t: i for i, t in enumerate(tokens)}))
    _write_whole(folder / "merges.txt", "#version: 0.2\na t</w>\n")  # one merge: save/load round trips keep a merges file
    return folder


def _write_whole(path: Path, text: str) -> None:
    """Write through a temp file and a rename: parallel test workers write the shared stand-in folder at import,
    and a reader must never see a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


REAL_CLIP_TOKENIZER = ASSETS / "clip_tokenizer"
HAS_REAL_CLIP_TOKENIZER = (REAL_CLIP_TOKENIZER / "vocab.json").is_file() and (REAL_CLIP_TOKENIZER / "merges.txt").is_file()
CLIP_TOKENIZER = (REAL_CLIP_TOKENIZER if HAS_REAL_CLIP_TOKENIZER
                  else byte_level_clip_tokenizer(Path(tempfile.gettempdir()) / "difflab-byte-level-clip-tokenizer"))
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "steps_offset": 1, "timestep_spacing": "leading", "prediction_type": "epsilon", "clip_sample": False,
                "set_alpha_to_one": False}  # Stable Diffusion 1.x's scheduler_config.json values


def tiny_clip_text(seed: int = 0):  # noqa: ANN201
    """(CLIPTokenizer from ../shared/assets or its byte-level stand-in, CLIPTextModel with 32-d states, random weights)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer(str(CLIP_TOKENIZER / "vocab.json"), str(CLIP_TOKENIZER / "merges.txt"), model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            max_position_embeddings=77)
    model = CLIPTextModel(config).eval()
    with torch.no_grad():  # a trained CLIP's final LayerNorm has a bias, so its states have a non-zero mean
        model.get_submodule("final_layer_norm" if hasattr(model, "final_layer_norm") else "text_model.final_layer_norm").bias.normal_(0.5, 0.5)
    return tokenizer, model


def tiny_clip_text_folder(folder: Path) -> Path:
    """A CLIP text encoder folder (tokenizer + model files) as `save_pretrained` writes it."""
    tokenizer, model = tiny_clip_text()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)
    return folder


def tiny_sd_pipeline(prediction: str = "epsilon"):  # noqa: ANN201
    """A StableDiffusionPipeline with a tiny UNet2DConditionModel (latents 4x8x8), AutoencoderKL (f = 2) and CLIP."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    tokenizer, text_encoder = tiny_clip_text()
    torch.manual_seed(1)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=4).eval()
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16).eval()
    scheduler = DDIMScheduler(**{**SD_SCHEDULER, "prediction_type": prediction})
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


SDXL_SCHEDULER = {**{k: v for k, v in SD_SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")},
                  "interpolation_type": "linear", "use_karras_sigmas": False}  # SDXL 1.0's EulerDiscreteScheduler


def tiny_sdxl_pipeline(prediction: str = "epsilon"):  # noqa: ANN201
    """A StableDiffusionXLPipeline of tiny random parts built from diffusers configs: two CLIP text encoders (32-d
    states each; the second with a 16-d projection, its tokenizer padding with "!"), a UNet with SDXL's text-time
    embedding (cross-attention 64 = 32 + 32, pooled 16 + 6 size ids x 8), an AutoencoderKL (f = 2, latents 4x8x8)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer, text_encoder = tiny_clip_text(seed=0)
    tokenizer_2 = CLIPTokenizer(str(CLIP_TOKENIZER / "vocab.json"), str(CLIP_TOKENIZER / "merges.txt"),
                                model_max_length=77, pad_token="!")
    torch.manual_seed(3)
    config = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=3,
                            vocab_size=len(tokenizer_2), bos_token_id=tokenizer_2.bos_token_id,
                            eos_token_id=tokenizer_2.eos_token_id, pad_token_id=tokenizer_2.pad_token_id,
                            max_position_embeddings=77, projection_dim=16)
    text_encoder_2 = CLIPTextModelWithProjection(config).eval()
    assert isinstance(text_encoder, CLIPTextModel)
    torch.manual_seed(4)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
                                attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=6 * 8 + 16, norm_num_groups=4).eval()
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=4, sample_size=16, scaling_factor=0.13025, force_upcast=True).eval()
    scheduler = EulerDiscreteScheduler(**{**SDXL_SCHEDULER, "prediction_type": prediction})
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True)


def fake_captioned_images(root: Path, n: int = 8, size: int = 20) -> Path:
    """PNG images with same-named .txt captions (a colour word and a shape word)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    colours, shapes = ("red", "green", "blue", "yellow"), ("circle", "square")
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + i, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
        (root / f"{i:03d}.txt").write_text(f"a {colours[i % 4]} {shapes[i % 2]}\n")
    return root


def tiny_vae_folder(folder: Path, scaling_factor: float | None = None) -> Path:
    """A diffusers AutoencoderKL (4 latent channels, f = 2, random weights) saved with `save_pretrained`; its config's
    `scaling_factor` when given (else diffusers' default, 0.18215)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(2)
    scaling = {} if scaling_factor is None else {"scaling_factor": scaling_factor}
    AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  layers_per_block=1, norm_num_groups=4, sample_size=16, **scaling).save_pretrained(folder)
    return folder


def fake_csv(root: Path, n: int = 8, size: tuple[int, int] = (40, 30), columns: int = 8) -> Path:
    """PNG images (width x height `size`) and `table.csv` (`filepath, x1, ..., x<columns>`); returns the CSV.

    Image i is black except the region rows 10..19, columns 5..24 (a 10 x 20 ROI), filled with grey level 10 * i,
    and its values are x_j = i + j / 10 (so every column varies)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["filepath," + ",".join(f"x{j + 1}" for j in range(columns))]
    for i in range(n):
        array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
        array[10:20, 5:25] = 10 * i
        Image.fromarray(array).save(root / f"img{i}.png")
        lines.append(f"img{i}.png," + ",".join(f"{i + (j + 1) / 10:g}" for j in range(columns)))
    (root / "table.csv").write_text("\n".join(lines) + "\n")
    return root / "table.csv"


def tiny_clip():  # noqa: ANN201
    """(CLIPModel with 32-d towers and 16-d projections, random weights; its CLIPProcessor with the real or stand-in
    tokenizer): the CLIP of CLIP-score tests."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                     "vocab_size": 49408, "max_position_embeddings": 77},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    tokenizer = CLIPTokenizer(str(CLIP_TOKENIZER / "vocab.json"), str(CLIP_TOKENIZER / "merges.txt"))
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=images, tokenizer=tokenizer)
