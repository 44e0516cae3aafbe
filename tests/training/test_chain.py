"""From narrated clips to a model the app loads, through the documented commands (docs/training.md, "From
curated data to a model"): curate -> curate release -> train encode -> train fit tpt -> train fit p2ft -> load.

Real Ophora clips from ../shared, the real curation pipeline and release, the tiny CogVideoX on CPU.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ophora.__main__ import main


@pytest.mark.slow
def test_curated_release_to_tpt_to_p2ft_to_a_model_the_app_loads(sample_clips, tiny_model_dir, tmp_path, capsys):
    from ophora.generation.engine import GenerationRequest, generate
    from ophora.generation.loading import load_pipeline

    clips = tmp_path / "clips.csv"
    pd.DataFrame({"video": [str(clip) for clip in sample_clips[:2]],
                  "caption": ["The surgeon inserts the intraocular lens into the capsular bag with the injector.",
                              "Hydrodissection: inject fluid under the anterior capsule with a cannula."]}
                 ).to_csv(clips, index=False)
    curated, release, data = tmp_path / "curated" / "curated.parquet", tmp_path / "release", tmp_path / "data"
    tpt, p2ft = tmp_path / "ophora-tpt", tmp_path / "ophora-p2ft"
    # The face and text screens stay on: the release refuses clips whose frames were not all screened.
    assert main(["curate", "--input", str(clips), "--out", str(curated)]) == 0
    assert main(["curate", "release", str(curated), "--out", str(release), "--quiet"]) == 0
    released = pd.read_parquet(release / "manifest.parquet")
    assert len(released) == 2

    assert main(["train", "encode", "--manifest", str(release / "manifest.parquet"), "--model", str(tiny_model_dir),
                 "--output", str(data), "--bucket", "9x96x144", "--device", "cpu", "--dtype", "float32"]) == 0
    index = json.loads((data / "index.json").read_text())
    assert sorted(c["instruction"] for c in index["clips"]) == sorted(released["instruction"])

    common = [f"data=[{data}]", "global_batch_size=2", "train_batch_size=1", "mixed_precision=no",
              "validation_steps=0", "save_dtype=fp32", "max_train_steps=2", "lr_warmup_steps=0"]
    assert main(["train", "fit", "ophora/training/configs/tpt.yaml", "--cpu"] + [f"--set={s}" for s in common + [
        f"base_model={tiny_model_dir}", f"output_dir={tpt}"]]) == 0
    assert "1 per process x 1 processes x 2 accumulation = global batch 2" in capsys.readouterr().out
    assert main(["train", "fit", "ophora/training/configs/p2ft.yaml", "--cpu"] + [f"--set={s}" for s in common + [
        f"base_model={tpt / 'model'}", f"output_dir={p2ft}"]]) == 0
    meta = json.loads((p2ft / "model" / "ophora_training.json").read_text())
    assert meta["stage"] == "p2ft" and meta["base_model"] == str(tpt / "model") and meta["steps"] == 2

    loaded = load_pipeline(model=str(p2ft / "model"), device="cpu")  # what the app's model field does
    clip = generate(loaded, GenerationRequest(prompt=released["instruction"].iloc[0], num_inference_steps=2,
                                              num_frames=9, height=96, width=144))
    assert clip.frames.shape == (9, 96, 144, 3)
