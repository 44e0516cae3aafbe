"""Clip collection, clear errors for bad input, and extractor weights loaded from files and named by hash."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from ophora.eval.cli import main
from ophora.eval.clips import EvalInputError, collect_clips, evenly_spaced, load_frames
from ophora.eval.metrics import Extractors, Protocol, _fvd_tensor, extract_features
from ophora.eval.weights import MissingWeightsError, sha256_file
from tests.eval.helpers import make_clips


def test_folder_manifest_and_subfolder_phases(tmp_path, sample_clips):
    make_clips(tmp_path / "gen", [("a", "capsulorhexis", "Tear a round capsulotomy")], frames=9)
    make_clips(tmp_path / "real" / "Phacoemulsification", [("b", None, None)], frames=9, sidecar=False)
    [gen] = collect_clips(tmp_path / "gen")
    assert (gen.phase, gen.prompt) == ("capsulorhexis", "Tear a round capsulotomy")
    [real] = collect_clips(tmp_path / "real")
    assert real.phase == "phacoemulsification" and real.prompt is None
    # A manifest CSV naming the shared real Ophora clips (absolute paths) with their phase in any spelling.
    manifest = tmp_path / "real.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "phase"])
        writer.writerows([[str(p), p.stem] for p in sample_clips])
    records = collect_clips(manifest)
    assert {r.phase for r in records} == {"hydrodissection", "lens-implantation"}


def test_fvd_preprocessing_of_a_real_720x480_clip(sample_clips):
    [record] = collect_clips(sample_clips[0])
    frames = load_frames(record)
    assert frames.shape == (49, 480, 720, 3)
    for resize in ("center-crop", "stretch"):
        video = _fvd_tensor(frames[:16], Protocol(fvd_resize=resize))
        assert video.shape == (3, 16, 224, 224)
        assert -1.0 <= float(video.min()) and float(video.max()) <= 1.0
    assert list(evenly_spaced(49, 16)[[0, -1]]) == [0, 48] and len(set(evenly_spaced(49, 16))) == 16


def test_empty_and_unknown_sets_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvalInputError, match="holds no video clips"):
        collect_clips(tmp_path / "empty")
    with pytest.raises(EvalInputError, match="neither a folder"):
        collect_clips(tmp_path / "missing")
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("name,phase\nx,incision\n")
    with pytest.raises(EvalInputError, match="path"):
        collect_clips(bad_csv)
    assert main(["metrics", "--generated", str(tmp_path / "empty"), "--real", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o"), "--random-init", "--metrics", "fid"]) == 2
    assert "holds no video clips" in capsys.readouterr().err


def test_mixed_frame_sizes_short_clips_and_missing_prompts(tmp_path):
    make_clips(tmp_path / "mixed", [("a", "incision", "x")], frames=9, size=(64, 96))
    make_clips(tmp_path / "mixed", [("b", "incision", "x")], frames=9, size=(48, 64))
    records = collect_clips(tmp_path / "mixed")
    with pytest.raises(EvalInputError, match="mixes frame sizes: 64x48"):
        extract_features(records, Extractors(fvd=object()), Protocol(), "generated set")
    make_clips(tmp_path / "short", [("a", "incision", "x"), ("b", "incision", "x")], frames=9)
    from ophora.eval.i3d import random_i3d

    with pytest.raises(EvalInputError, match="has 9 frames; FVD with 16 frames"):
        extract_features(collect_clips(tmp_path / "short"), Extractors(fvd=random_i3d()[0]), Protocol(), "set")
    make_clips(tmp_path / "noprompt", [("a", "incision", None)], frames=9, sidecar=False)
    with pytest.raises(EvalInputError, match="CLIPScore needs each clip's instruction"):
        extract_features(collect_clips(tmp_path / "noprompt"), Extractors(clip=object()), Protocol(), "set")


def test_missing_weights_say_where_to_get_them(tmp_path, capsys):
    from ophora.eval.i3d import I3D_TORCHSCRIPT_URL, load_i3d
    from ophora.eval.inception import FID_WEIGHTS_URL, load_fid_inception

    with pytest.raises(MissingWeightsError, match="pytorch-fid/releases"):
        load_fid_inception(tmp_path / "nope.pth")
    with pytest.raises(MissingWeightsError, match="downloads are off") as error:
        load_i3d(None, offline=True, cache_dir=tmp_path / "cache")
    assert I3D_TORCHSCRIPT_URL in str(error.value) and "--i3d-weights" in str(error.value)
    make_clips(tmp_path / "g", [("a", "incision", "x"), ("b", "incision", "x")], frames=17)
    code = main(["metrics", "--generated", str(tmp_path / "g"), "--real", str(tmp_path / "g"), "--out",
                 str(tmp_path / "o"), "--metrics", "fid", "--inception-weights", str(tmp_path / "absent.pth")])
    assert code == 2 and FID_WEIGHTS_URL in capsys.readouterr().err
    from ophora.eval.clip_score import load_clip_scorer

    with pytest.raises(MissingWeightsError, match="--clip-model"):
        load_clip_scorer("no-such-org/no-such-clip", offline=True)


@pytest.mark.slow
def test_inception_state_dict_loads_strictly_and_is_hashed(tmp_path):
    from ophora.eval.inception import FIDInceptionV3, load_fid_inception, random_fid_inception

    model, _ = random_fid_inception(seed=3)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    loaded, info = load_fid_inception(path)
    assert info.sha256 == sha256_file(path) and not info.random_init
    assert isinstance(loaded, FIDInceptionV3)
    images = torch.rand(1, 3, 40, 60)
    with torch.inference_mode():
        assert torch.equal(model(images), loaded(images))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "wrong.pth")
    with pytest.raises(MissingWeightsError, match="does not hold the expected weights.*FID Inception"):
        load_fid_inception(tmp_path / "wrong.pth")


def test_i3d_loads_a_state_dict_or_a_torchscript_archive(tmp_path):
    from ophora.eval.i3d import InceptionI3d, TorchScriptI3D, load_i3d, random_i3d

    model, _ = random_i3d(seed=1)
    torch.save(model.state_dict(), tmp_path / "rgb.pt")
    loaded, info = load_i3d(tmp_path / "rgb.pt")
    assert isinstance(loaded, InceptionI3d) and info.sha256 == sha256_file(tmp_path / "rgb.pt")

    class Scripted(torch.nn.Module):  # the calling convention of StyleGAN-V's i3d_torchscript.pt
        def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                    return_features: bool = False) -> torch.Tensor:
            assert not rescale and not resize and return_features
            return x.mean(dim=(2, 3, 4)).repeat(1, 400)[:, :400]

    torch.jit.save(torch.jit.script(Scripted()), tmp_path / "i3d_torchscript.pt")
    scripted, info = load_i3d(tmp_path / "i3d_torchscript.pt")
    assert isinstance(scripted, TorchScriptI3D) and "TorchScript" in info.name
    assert scripted(torch.zeros(2, 3, 16, 8, 8)).shape == (2, 400)


def test_app_history_layout_scores_the_unlabelled_study_master(tmp_path):
    # The app's history: <id>.mp4 (labelled) beside <id>.study.mp4 (unlabelled), both with provenance.
    from ophora.generation.video import write_clip

    frames = np.full((9, 32, 48, 3), 90, np.uint8)
    provenance = {"prompt": "Polish the posterior capsule", "phase": "capsule polishing", "synthetic": True}
    write_clip(frames, tmp_path / "20260101-120000-abcdef.study.mp4", fps=8, provenance=provenance)
    write_clip(frames, tmp_path / "20260101-120000-abcdef.mp4", fps=8, synthetic_mark=True, provenance=provenance)
    [record] = collect_clips(tmp_path)
    assert record.path.name == "20260101-120000-abcdef.study.mp4"
    assert (record.prompt, record.phase) == ("Polish the posterior capsule", "capsule-polishing")
    assert not record.marked


def test_clips_with_a_burned_in_label_are_flagged(tmp_path):
    """The writer records the visible SYNTHETIC label in the provenance; metrics must know it is in the frames."""
    from ophora.generation.video import write_clip

    frames = np.full((9, 32, 48, 3), 90, np.uint8)
    write_clip(frames, tmp_path / "labelled.mp4", fps=8, synthetic_mark=True, provenance={"prompt": "x"})
    write_clip(frames, tmp_path / "clean.mp4", fps=8, synthetic_mark=False, provenance={"prompt": "x"})
    marked = {r.path.name: r.marked for r in collect_clips(tmp_path)}
    assert marked == {"labelled.mp4": True, "clean.mp4": False}


def test_too_few_clips_for_a_covariance_fail_before_extraction(tmp_path, capsys):
    make_clips(tmp_path / "one", [("a", "incision", "x")], frames=17)
    make_clips(tmp_path / "two", [("a", "incision", "x"), ("b", "incision", "x")], frames=17)
    code = main(["metrics", "--generated", str(tmp_path / "one"), "--real", str(tmp_path / "two"), "--out",
                 str(tmp_path / "o"), "--random-init", "--metrics", "fvd"])
    assert code == 2 and "has 1 clip(s); FVD" in capsys.readouterr().err
    code = main(["metrics", "--generated", str(tmp_path / "two"), "--real", str(tmp_path / "one"), "--out",
                 str(tmp_path / "o"), "--random-init", "--metrics", "fid", "--fid-frames-per-clip", "1"])
    assert code == 2 and "real set gives 1 frame(s); FID needs at least 2" in capsys.readouterr().err


def test_generator_manifest_is_read_and_failed_rows_skipped(tmp_path):
    make_clips(tmp_path / "out", [("c1", "incision", "Make the main incision")], frames=9, sidecar=True)
    (tmp_path / "out" / "manifest.csv").write_text(
        "clip_id,status,video,phase,prompt\n"
        "c1,done,c1.mp4,incision,Make the main incision\n"
        "c2,failed,,viscoelastic,Fill the chamber\n")
    [record] = collect_clips(tmp_path / "out" / "manifest.csv")
    assert (record.path.name, record.phase, record.prompt) == ("c1.mp4", "incision", "Make the main incision")


def test_every_missing_weight_file_in_one_message(tmp_path, monkeypatch, capsys):
    """Offline with nothing cached: FID, FVD, CD-FVD, JEDi and CLIP weights are all named in one run, each with
    where it goes."""
    from ophora.eval.i3d import I3D_TORCHSCRIPT_URL
    from ophora.eval.inception import FID_WEIGHTS_URL
    from ophora.eval.videomae import VIDEOMAE_URL
    from ophora.eval.vjepa import DEFAULT_VJEPA_MODEL

    monkeypatch.setenv("OPHORA_EVAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_clips(tmp_path / "g", [("a", "incision", "x"), ("b", "incision", "x")], frames=17)
    code = main(["metrics", "--generated", str(tmp_path / "g"), "--real", str(tmp_path / "g"), "--out",
                 str(tmp_path / "o"), "--offline", "--clip-model", str(tmp_path / "no-clip")])
    err = capsys.readouterr().err
    assert code == 2 and "5 extractor weight files are missing" in err
    assert FID_WEIGHTS_URL in err and I3D_TORCHSCRIPT_URL in err and str(tmp_path / "no-clip") in err
    assert VIDEOMAE_URL in err and "--videomae-weights" in err
    assert f"`hf download {DEFAULT_VJEPA_MODEL}`" in err and "--vjepa-model" in err
    assert str(tmp_path / "cache" / "i3d_torchscript.pt") in err  # where each goes
