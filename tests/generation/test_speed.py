"""Speed presets on the real diffusers pipeline with tiny random weights: each attaches its diffusers hook,
skips the work it should (counted per block), leaves `exact` bit-identical, and refuses clearly what it cannot do."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ophora.generation.engine import GenerationRequest, generate
from ophora.generation.loading import load_pipeline
from ophora.generation.request import GenerationInputError, check_request
from ophora.generation.speed import (MAGCACHE_FILE, SpeedPresetError, attached_cache, calibrate_magcache,
                                     magcache_ratios_path)

STEPS = 8  # trailing timesteps 999..124: steps inside every preset's skip window
SMALL = dict(num_frames=9, height=48, width=64)  # a small clip: the counts, not the pictures, are checked


class BlockCalls:
    """Counts, per transformer block, the calls that really ran: attention projections and feed-forwards, and the
    batch rows the transformer computed (2 with guidance; 1 when the unguided half is reused)."""

    def __init__(self, transformer) -> None:
        self.attention = [0] * len(transformer.transformer_blocks)
        self.feedforward = [0] * len(transformer.transformer_blocks)
        self.rows: list[int] = []
        self._handles = [transformer.patch_embed.register_forward_pre_hook(
            lambda m, args: self.rows.append(int(args[1].shape[0])))]
        for i, block in enumerate(transformer.transformer_blocks):
            self._handles.append(block.attn1.to_q.register_forward_pre_hook(
                lambda m, a, i=i: self._bump(self.attention, i)))
            self._handles.append(block.ff.register_forward_pre_hook(lambda m, a, i=i: self._bump(self.feedforward, i)))

    @staticmethod
    def _bump(counter: list[int], i: int) -> None:
        counter[i] += 1

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """A private copy: calibration writes beside the weights."""
    return shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("speed") / "tiny")


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_pipeline(model=str(model_dir))


@pytest.fixture(scope="module")
def exact(loaded):
    """The published sampler's clip and its block calls, before any preset was ever attached."""
    calls = BlockCalls(loaded.pipe.transformer)
    result = generate(loaded, _request())
    calls.remove()
    return result, calls


def _request(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "Inject balanced salt solution under the capsule rim", "seed": 7,
                                "num_inference_steps": STEPS, **SMALL, **kw})


def _hooks(transformer) -> int:
    return sum(len(m._diffusers_hook.hooks) for m in transformer.modules() if hasattr(m, "_diffusers_hook"))


def _run(loaded, **kw):
    calls = BlockCalls(loaded.pipe.transformer)
    try:
        return generate(loaded, _request(**kw)), calls
    finally:
        calls.remove()


def test_exact_runs_every_block_every_step(exact):
    result, calls = exact
    assert calls.attention == calls.feedforward == [STEPS, STEPS] and calls.rows == [2] * STEPS
    assert result.provenance["speed"] == "exact" and result.provenance["speed_preset"]["config"] is None


@pytest.mark.parametrize("speed, skips", [
    ("pab", "attention"),          # attention reused inside timesteps (100, 800), every other step
    ("taylorseer", "attention"),   # attention predicted by a Taylor series between full steps
    ("fastercache", "attention+unguided"),
])
def test_each_preset_attaches_skips_its_work_and_is_removed_after(loaded, exact, speed, skips):
    reference, _ = exact
    result, calls = _run(loaded, speed=speed)
    assert _hooks(loaded.pipe.transformer) == 0  # removed after the clip
    assert calls.feedforward == [STEPS, STEPS]  # these presets reuse attention only
    for block in calls.attention:
        assert 0 < block < STEPS, calls.attention
    if "unguided" in skips:
        assert 1 in calls.rows and 2 in calls.rows, calls.rows
    else:
        assert calls.rows == [2] * STEPS
    assert result.frames.shape == reference.frames.shape and not np.array_equal(result.frames, reference.frames)
    assert result.provenance["speed"] == speed
    assert result.provenance["speed_preset"]["config"]["hook"].endswith("Config")


def test_first_block_cache_skips_later_blocks_by_threshold(loaded, exact):
    # Random weights change a lot between steps: the default 0.05 skips nothing on them (a real finding, kept);
    # a high threshold shows the mechanism: block 0 always runs, block 1 is skipped on some steps.
    default, calls = _run(loaded, speed="firstblock")
    assert calls.attention == [STEPS, STEPS]
    result, calls = _run(loaded, speed="firstblock", speed_threshold=0.5)
    assert calls.feedforward[0] == STEPS and 0 < calls.feedforward[1] < STEPS, calls.feedforward
    assert result.provenance["speed_preset"]["config"] == {"hook": "FirstBlockCacheConfig", "threshold": 0.5}


def test_exact_is_bit_identical_after_presets_ran(loaded, exact):
    reference, _ = exact
    _run(loaded, speed="pab", num_inference_steps=3)  # attach, run, remove
    again, calls = _run(loaded)
    assert np.array_equal(again.frames, reference.frames)
    assert calls.attention == [STEPS, STEPS]


def test_magcache_is_refused_until_calibrated_then_skips_whole_steps(loaded, model_dir):
    with pytest.raises(SpeedPresetError, match="calibrate-magcache"):
        generate(loaded, _request(speed="magcache"))
    path = calibrate_magcache(loaded, _request())
    assert path == model_dir / MAGCACHE_FILE == magcache_ratios_path(loaded)
    saved = json.loads(path.read_text())
    assert len(saved["ratios"]) == STEPS and saved["ratios"][0] == 1.0 and saved["model_fingerprint"]
    # The ratios file must not change the model's fingerprint (or every calibration would void itself).
    assert load_pipeline(model=str(model_dir)).model_fingerprint == loaded.model_fingerprint
    result, calls = _run(loaded, speed="magcache", speed_threshold=1.0)
    assert calls.attention == calls.feedforward and 0 < calls.attention[0] < STEPS, calls.attention
    assert result.provenance["speed_preset"]["config"]["mag_ratios"][:2] == [1.0, round(saved["ratios"][1], 5)]
    assert _hooks(loaded.pipe.transformer) == 0


def test_magcache_is_refused_when_the_weights_changed_since_calibration(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    loaded = load_pipeline(model=str(folder))
    calibrate_magcache(loaded, _request(num_inference_steps=2))
    with (folder / "transformer" / "config.json").open("a") as handle:
        handle.write("\n")  # any change to the weights' folder
    with pytest.raises(SpeedPresetError, match="other weights.*calibrate-magcache"):
        generate(load_pipeline(model=str(folder)), _request(speed="magcache", num_inference_steps=2))


def test_clear_refusals(loaded):
    with pytest.raises(SpeedPresetError, match="guidance 1 has none"):
        generate(loaded, _request(speed="fastercache", guidance_scale=1.0))
    with pytest.raises(GenerationInputError, match="Unknown speed 'turbo'"):
        check_request(_request(speed="turbo"))
    with pytest.raises(GenerationInputError, match="applies only to the speeds firstblock and magcache"):
        check_request(_request(speed="pab", speed_threshold=0.1))
    with pytest.raises(GenerationInputError, match="above 0 and at most 1"):
        check_request(_request(speed="firstblock", speed_threshold=3))
    # TaylorSeer's own default pattern matches no CogVideoX module: a preset that would do nothing is refused.
    from diffusers import TaylorSeerCacheConfig

    with pytest.raises(SpeedPresetError, match="found no layer"):
        with attached_cache(loaded, TaylorSeerCacheConfig()):
            pass
    assert _hooks(loaded.pipe.transformer) == 0


def test_a_batch_reuses_clips_of_the_same_speed_only(tmp_path):
    """Sidecars from before the presets existed count as exact; a clip made with another speed is never reused."""
    from ophora.generation.batch import BatchInputError, _clip_settings, clip_is_done

    video = tmp_path / "c1.mp4"
    video.write_bytes(b"mp4")
    exact = _clip_settings(_request())
    old = {k: v for k, v in exact.items() if k not in ("speed", "speed_threshold")}
    video.with_suffix(".json").write_text(json.dumps(old))
    assert clip_is_done(video, exact)
    with pytest.raises(BatchInputError, match="speed"):
        clip_is_done(video, _clip_settings(_request(speed="pab")))


def test_cli_refuses_uncalibrated_magcache_before_loading(tiny_model_dir, tmp_path, capsys):
    from ophora.generation.cli import main

    folder = shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    assert main(["Inject fluid", "--model", str(folder), "--speed", "magcache", "--out", str(tmp_path / "c.mp4")]) == 2
    assert "calibrate-magcache --model" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists()
