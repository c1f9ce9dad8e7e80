"""Prompt weighting: the parser (nested, escaped, de-emphasis) and its effect on a CLIP text encoder's context."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from difflab.nets.prompts import parse_prompt_weights
from fakes import tiny_clip_text



@pytest.mark.parametrize("prompt,expected", [
    ("a cat", [("a cat", 1.0)]),
    ("a (red:1.5) [dog]", [("a ", 1.0), ("red", 1.5), (" ", 1.0), ("dog", 1 / 1.1)]),
    ("(worst quality:1.4), ((a (b) c))", [("worst quality", 1.4), (", ", 1.0), ("a ", 1.21), ("b", 1.331), (" c", 1.21)]),
    ("((x:2) y:0.5)", [("x", 1.0), (" y", 0.5)]),  # nested weights multiply: 2 * 0.5
    (r"\(not weighted\) \[nor this\] \\", [("(not weighted) [nor this] \\", 1.0)]),
    (r"(a \(b\):1.2)", [("a (b)", 1.2)]),
    ("(open to the end", [("open to the end", 1.1)]),
    ("closed ) ] twice", [("closed ) ] twice", 1.0)]),
    ("ratio a:b [x:1.5]", [("ratio a:b ", 1.0), ("x:1.5", 1 / 1.1)]),  # ":w" only closes round brackets
    ("", [("", 1.0)]),
])
def test_prompt_weight_parsing(prompt, expected) -> None:
    got = parse_prompt_weights(prompt)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_weighting_scales_token_states_and_restores_the_mean() -> None:
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    plain = "a photo of a cat, high quality"
    (ids, weights), = encoder.chunks(plain)
    assert ids == tokenizer(plain, padding="max_length", max_length=77, truncation=True).input_ids  # SD's tokenization
    assert weights == [1.0] * 77
    z_plain = encoder([plain])
    torch.testing.assert_close(z_plain, model(torch.tensor([ids])).last_hidden_state)  # unweighted: the CLIP states
    weighted = "a photo of a (cat:1.5), [high quality]"
    (ids_w, weights_w), = encoder.chunks(weighted)
    assert ids_w == ids  # brackets and weights are not tokens
    n_cat = len(tokenizer("cat", add_special_tokens=False).input_ids)
    n_hq = len(tokenizer("high quality", add_special_tokens=False).input_ids)
    assert weights_w.count(1.5) == n_cat and weights_w.count(pytest.approx(1 / 1.1)) == n_hq
    z = encoder([weighted, plain])
    w = torch.tensor(weights_w)[None, :, None]
    expected = z_plain * w * (z_plain.mean() / (z_plain * w).mean())
    torch.testing.assert_close(z[:1], expected)
    torch.testing.assert_close(z[1:], z_plain)  # per prompt: a weighted neighbour changes nothing
    assert z[0].mean().item() == pytest.approx(z_plain.mean().item(), rel=1e-5)


def test_long_prompts_are_cut_into_75_token_chunks_encoded_apart_and_concatenated() -> None:
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    words = ["mackerel"] * 120
    ids = tokenizer(" ".join(words), add_special_tokens=False).input_ids
    chunks = encoder.chunks(" ".join(words))
    assert len(chunks) == -(-len(ids) // 75) >= 2
    for k, (chunk, weights) in enumerate(chunks):  # each chunk is framed as a prompt of its own
        body = ids[75 * k : 75 * (k + 1)]
        want = [tokenizer.bos_token_id, *body, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (75 - len(body))
        assert chunk == want and weights == [1.0] * 77
    z = encoder([" ".join(words)])
    assert z.shape == (1, 77 * len(chunks), 32)
    first = model(torch.tensor([chunks[0][0]])).last_hidden_state
    last = model(torch.tensor([chunks[-1][0]])).last_hidden_state
    torch.testing.assert_close(z[:, :77], first)
    torch.testing.assert_close(z[:, -77:], last)
    exactly = tokenizer.decode(ids[:75])  # 75 tokens are one chunk, 76 two
    assert len(encoder.chunks(exactly)) == 1


def test_break_ends_a_chunk_and_a_full_chunk_ends_after_its_last_comma() -> None:
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    tokens = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    first, second = encoder.chunks("a red fish BREAK a blue bird")
    assert first[0][1 : 1 + len(tokens("a red fish"))] == tokens("a red fish")
    assert second[0][1 : 1 + len(tokens("a blue bird"))] == tokens("a blue bird")
    assert encoder(["a red fish BREAK a blue bird"]).shape == (1, 154, 32)
    filler = " ".join(["fish"] * (70 // len(tokens("fish"))))  # under 75 tokens, a comma, then words that overflow
    birds = " ".join(["bird"] * (20 // len(tokens("bird"))))
    head, tail = encoder.chunks(f"{filler}, {birds}")
    cut = head[0].index(tokenizer.eos_token_id)
    assert cut < 76 and head[0][cut - 1] == tokens(",")[0]  # the chunk ends at the comma, padded
    assert tail[0][1 : 1 + len(tokens(birds))] == tokens(birds)


def test_prompts_of_different_lengths_keep_their_own_contexts() -> None:
    from difflab.diffusion.conditioning import TextCond
    from difflab.nets.text import CLIPTextEncoder

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    long = " ".join(["mackerel"] * 90)
    both = encoder(["a cat", long])
    assert isinstance(both, TextCond) and both.lengths.tolist() == [77, both.context.shape[1]]
    torch.testing.assert_close(both.context[0, :77], encoder(["a cat"])[0])
    assert both.context[0, 77:].abs().max() == 0  # padding no network sees (conditioning.run_by_length)
    torch.testing.assert_close(both.context[1], encoder([long])[0])


def test_unet_cross_attention_is_off_by_default_and_uses_the_context() -> None:
    from difflab.nets import UNet

    kwargs = dict(in_channels=4, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                  resolution=8, num_heads=2)
    plain = UNet(**kwargs)
    assert not any("cross" in k for k in plain.state_dict())  # old checkpoints keep loading
    net = UNet(**kwargs, context_dim=32)
    for name, p in net.named_parameters():  # zero-initialised outputs: make the cross-attention visible
        if name.endswith("cross.proj.weight") or name.startswith("conv_out"):
            torch.nn.init.normal_(p, std=0.5)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10.0, 500.0])
    a, b = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    assert (net(x, t, a) - net(x, t, b)).abs().max() > 1e-3
    torch.testing.assert_close(net(x[:1], t[:1], a[:1]), net(x, t, a)[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="context_dim"):
        net(x, t, None)


def test_image_text_data_from_a_folder_and_from_jsonl_csv_indexes(tmp_path) -> None:
    import json

    from difflab.data.files import CorruptDataError
    from difflab.data.image_text import ImageTextDataModule
    from fakes import fake_captioned_images

    root = fake_captioned_images(tmp_path / "pairs", n=6)
    rows = [{"path": f"pairs/{i:03d}.png", "caption": (root / f"{i:03d}.txt").read_text().strip()} for i in range(6)]
    (tmp_path / "index.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "index.csv").write_text("path,caption\n" + "".join(f'{r["path"]},"{r["caption"]}"\n' for r in rows))
    for source in (root, tmp_path / "index.jsonl", tmp_path / "index.csv"):
        dm = ImageTextDataModule(str(source), resolution=8, batch_size=2, val_fraction=0.34)
        dm.setup()
        batch = next(iter(dm.train_dataloader()))
        assert batch["image"].shape == (2, 3, 8, 8) and len(batch["caption"]) == 2
        assert all(c.startswith("a ") for c in batch["caption"])
        assert len(dm.split_dataset("train")) + len(dm.split_dataset("val")) == 6
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0]) + "\n" + '{"path": "x.png"}\n')
    with pytest.raises(CorruptDataError, match=r"bad.jsonl, line 2: no caption / text field"):
        ImageTextDataModule(str(tmp_path / "bad.jsonl")).setup()
    (root / "002.txt").unlink()
    with pytest.raises(CorruptDataError, match=r"1 image\(s\) under .* no same-named .txt caption, e.g. 002.png"):
        ImageTextDataModule(str(root)).setup()


def test_text_conditioned_ldm_trains_and_samples_from_a_prompt(train_cfg, tmp_path) -> None:
    from difflab.cli.sample import run as sample
    from difflab.api.training import run
    from conftest import compose_config
    from fakes import fake_captioned_images, tiny_clip_text_folder, tiny_vae_folder

    data = fake_captioned_images(tmp_path / "pairs", n=8)
    cfg = train_cfg("model=ldm_text", "data=image_text", f"data.root={data}", "data.resolution=16",
                    "model/autoencoder=pretrained", f"model.autoencoder.path={tiny_vae_folder(tmp_path / 'vae')}",
                    "model.autoencoder.downsample_factor=2", "model.net.context_dim=32",
                    f"model.text_encoder.path={tiny_clip_text_folder(tmp_path / 'clip')}", "trainer.max_steps=3",
                    "callbacks.checkpoint_last.every_n_train_steps=3", "metrics=none")
    out = run(cfg)
    assert out["global_step"] == 3 and (out["run_dir"] / "samples" / "final.png").is_file()
    ckpt = out["run_dir"] / "checkpoints" / "last.ckpt"
    scfg = compose_config("sample", [f"ckpt={ckpt}", "prompt='a (red:1.2) circle'", "negative_prompt=blue",
                                     "guidance_scale=4", "n=2", "device=cpu", "sampler=ddim", "sampler.steps=3"],
                          tmp_path / "s")  # the run folder holds the training run: sample.py never writes into it
    result = sample(scfg)
    assert result["images"].shape == (2, 3, 16, 16) and torch.isfinite(result["images"]).all()


def test_caption_dropout_replaces_captions_by_the_empty_prompt(tmp_path) -> None:
    from functools import partial

    from difflab.conditions import TextPrompt
    from difflab.diffusion import DiffusionLoss, DiscreteVPScheduler
    from difflab.lit.text import TextDiffusionModule
    from difflab.nets import UNet
    from difflab.nets.text import CLIPTextEncoder

    encoder = CLIPTextEncoder(*tiny_clip_text())
    net = UNet(in_channels=3, base_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(8,),
               resolution=8, num_heads=1, context_dim=32)
    module = TextDiffusionModule(net, DiscreteVPScheduler(), DiffusionLoss(), partial(torch.optim.AdamW, lr=1e-3),
                                 image_shape=(3, 8, 8), text_encoder=encoder,
                                 condition=TextPrompt(drop_prob=0.5))
    module.train()
    torch.manual_seed(0)
    captions = [f"caption {i}" for i in range(32)]
    _, cond = module._inputs({"image": torch.zeros(32, 3, 8, 8), "caption": captions})
    empty = encoder([""])[0]
    dropped = [bool((c - empty).abs().max() < 1e-6) for c in cond]
    assert 6 < sum(dropped) < 26  # about half, at p = 0.5
    kept = [i for i, d in enumerate(dropped) if not d]
    torch.testing.assert_close(cond[kept], encoder([captions[i] for i in kept]))


def test_prepare_captions_filters_by_clip_similarity_and_reports_every_drop(tmp_path) -> None:
    import json

    from PIL import Image

    from difflab.data.image_text import ImageTextDataModule
    from difflab.cli.prepare_captions import clip_similarity, main
    from fakes import fake_captioned_images
    from fakes import tiny_clip as _tiny_clip

    model, processor = _tiny_clip()
    processor.tokenizer.model_max_length = 77
    model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    root = fake_captioned_images(tmp_path / "pairs", n=8, size=40)
    Image.new("RGB", (10, 12)).save(root / "tiny.png")
    (root / "tiny.txt").write_text("a tiny image")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "broken.txt").write_text("a broken image")
    Image.new("RGB", (40, 40)).save(root / "uncaptioned.png")
    images = [Image.open(root / f"{i:03d}.png").convert("RGB") for i in range(8)]
    captions = [(root / f"{i:03d}.txt").read_text().strip() for i in range(8)]
    sims = clip_similarity(model, processor, images, captions, torch.device("cpu"))
    ordered = sims.sort().values
    threshold = float(ordered[3] + ordered[4]) / 2  # between two pairs: float rounding cannot move one across
    report = main([str(root), "--out", str(tmp_path / "clean" / "index.jsonl"), "--clip", str(tmp_path / "clip"),
                   "--clip-min", str(threshold), "--min-size", "32", "--batch-size", "3"])
    want = sorted(f"{i:03d}.png" for i in range(8) if sims[i] >= threshold)
    rows = [json.loads(line) for line in (tmp_path / "clean" / "index.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == want and 0 < len(want) < 8
    for r in rows:  # the recorded similarity is the CLIP cosine of that pair
        assert r["clip_similarity"] == pytest.approx(float(sims[int(Path(r["path"]).stem)]), abs=1e-4)
    assert report["candidates"] == 11 and report["kept"] == len(want)
    assert report["reasons"] == {"clip similarity": 8 - len(want), "too small": 1, "unreadable": 1, "no caption": 1}
    on_disk = json.loads((tmp_path / "clean" / "index.jsonl.report.json").read_text())
    assert {d["path"]: d["reason"] for d in on_disk["dropped_pairs"]}["tiny.png"] == "too small: 10x12 < 32"
    dm = ImageTextDataModule(str(tmp_path / "clean" / "index.jsonl"), resolution=8, batch_size=1, val_fraction=0.25)
    dm.setup()  # the clean index is a data=image_text source
    assert len(dm.split_dataset("train")) + len(dm.split_dataset("val")) == len(want)


def test_prompt_editing_defers_encoding_to_the_grid_and_plain_text_turns_the_language_off() -> None:
    from difflab.nets.text import CLIPTextEncoder, PromptSchedule

    tokenizer, model = tiny_clip_text()
    encoder = CLIPTextEncoder(tokenizer, model)
    scheduled = encoder(["a [red|blue] fish", "a cat"])
    assert isinstance(scheduled, PromptSchedule) and len(scheduled) == 2
    bound = scheduled.on_grid(torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64))  # 3 steps
    assert bound.index.tolist() == [[0, 1, 0], [2, 2, 2]]
    torch.testing.assert_close(bound.table, encoder(["a red fish", "a blue fish", "a cat"]))
    plain = CLIPTextEncoder(tokenizer, model, weighting=False)
    (ids, _), = plain.chunks("a [red|blue] (fish:1.2)")
    assert ids[1 : 1 + len(tokenizer("a [red|blue] (fish:1.2)", add_special_tokens=False).input_ids)] == \
        tokenizer("a [red|blue] (fish:1.2)", add_special_tokens=False).input_ids
    assert isinstance(plain(["a [red|blue] fish"]), torch.Tensor)
