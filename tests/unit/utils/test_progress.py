"""Progress everywhere: the ETA arithmetic on a fake clock, and the plain log lines (not a terminal) of a tiny
train.py, sample.py and evaluate.py run carrying count / total, images/s and the ETA of each phase."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest

from conftest import TINY_NET, compose_config
from difflab.utils.progress import Progress, format_duration
from fakes import tiny_networks


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_remaining_work_at_the_rate_measured_since_the_start():
    clock = FakeClock()
    p = Progress("sampling", 100, "images", clock=clock, stream=io.StringIO(), tty=False, enabled=False)
    assert p.eta() != p.eta()  # NaN: nothing done yet
    clock.now += 5.0
    p.update(10)
    assert p.rate() == pytest.approx(2.0) and p.eta() == pytest.approx(45.0)  # 90 images at 2 images/s
    clock.now += 15.0
    p.update(30)
    assert p.eta() == pytest.approx(60 * 20 / 40) and p.line() == (
        "sampling 40/100 images (40%) | 2 images/s | ETA 0:00:30")
    # a resumed run: steps 500..1000, rate and ETA over the steps run here; images/s counts images
    clock = FakeClock()
    t = Progress("train step", 1000, "", rate_unit="images", initial=500, clock=clock, stream=io.StringIO(), tty=False,
                 enabled=False)
    clock.now += 10.0
    t.set(600, counted=6400, loss=0.03125)
    assert t.eta() == pytest.approx(400 * 10 / 100) and t.rate() == pytest.approx(640.0)
    assert t.line() == "train step 600/1000 (60%) | 640 images/s | loss 0.03125 | ETA 0:00:40"
    assert format_duration(3725) == "1:02:05" and format_duration(90000) == "1 days, 1:00:00"


def test_plain_lines_come_every_tenth_or_interval_and_a_terminal_gets_one_rewritten_line(caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger="difflab.progress"):
        p = Progress("features", 1000, "images", clock=clock, interval=30.0, every=0.1, tty=False)
        for _ in range(200):  # 1000 images, 5 per second: 200 s
            clock.now += 1.0
            p.update(5)
        p.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "difflab.progress"]
    # every 10% (each 20 s) comes before the 30 s interval: ten lines, the last at 100%, none repeated by close()
    assert len(lines) == 10 and lines[-1].startswith("features 1000/1000 images (100%) | 5 images/s")
    stream = io.StringIO()
    p = Progress("sampling", 4, "images", clock=clock, stream=stream, tty=True)
    for _ in range(4):
        clock.now += 1.0
        p.update(1)
    text = stream.getvalue()
    assert text.startswith("\r") and text.endswith("sampling 4/4 images (100%) | 1 images/s | ETA 0:00:00\n")
    assert text.count("\n") == 1


def progress_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "difflab.progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 3-step tiny training run, its progress lines captured (pytest's capture: not a terminal)."""
    from difflab.cli import train

    root = tmp_path_factory.mktemp("progress")
    handler = _MemoryHandler()
    logger = logging.getLogger("difflab.progress")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        out = train.run(compose_config("train", ["debug=fast", "logger=csv", "metrics=none", "trainer.max_steps=3",
                                                 *TINY_NET], root))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return {"root": root, "ckpt": out["last_ckpt"], "lines": handler.lines}


class _MemoryHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


ETA = r"ETA \d+:\d\d:\d\d"


def test_training_lines_carry_step_of_max_steps_images_per_second_loss_and_eta(trained):
    lines = trained["lines"]
    assert [re.match(r"train step (\d)/3 ", line).group(1) for line in lines] == ["1", "2", "3"]
    assert re.fullmatch(rf"train step 3/3 \(100%\) \| [\d.e+]+ images/s \| loss [\d.e+-]+ \| {ETA}", lines[-1])


def test_sample_lines_carry_images_of_total_nfe_images_per_second_and_eta(trained, caplog):
    from difflab.cli import sample

    root = trained["root"]
    cfg = compose_config("sample", [f"ckpt={trained['ckpt']}", "sampler=ddim", "sampler.steps=4", "n=4", "batch_size=2",
                                    f"out_dir={root}/sampled"], root)
    with caplog.at_level(logging.INFO, logger="difflab.progress"):
        sample.run(cfg)
    lines = progress_lines(caplog)
    assert re.fullmatch(rf"sampling 4/4 images \(100%\) \| [\d.e+]+ images/s \| NFE 4 \| {ETA}", lines[-1])
    assert any(line.startswith("sampling 1/4 images (25%)") for line in lines)  # within the first batch of 2


def test_evaluate_shows_each_phase_with_counts_and_eta(trained, caplog, tmp_path):
    from difflab.cli import evaluate

    small = ["logger=csv", "metrics=fast", "metrics.batch_size=4", "metrics.reference.n=16", "metrics.kid_subset_size=4",
             "metrics.feature_batch_size=8", "metrics.lpips_diversity=false", "metrics.broken_rate=false"]
    cfg = compose_config("evaluate", [f"ckpt={trained['ckpt']}", "sampler=ddim", "sampler.steps=2", "n_samples=4",
                                      *small], tmp_path / "ckpt")
    with caplog.at_level(logging.INFO, logger="difflab.progress"):
        record = evaluate.run(cfg, networks=tiny_networks())
        evaluate.run(compose_config("evaluate", [f"images={Path(record['images'])}", "data=digits", *small],
                                    tmp_path / "images"), networks=tiny_networks())
    lines = progress_lines(caplog)
    for phase, total in (("reference statistics", 16), ("sampling \\(and features\\)", 4), ("features", 4)):
        assert any(re.fullmatch(rf"{phase} {total}/{total} images \(100%\) \| [\d.e+]+ images/s( \| NFE 2)? \| {ETA}", line)
                   for line in lines), (phase, lines)
