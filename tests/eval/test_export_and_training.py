"""Downstream export to a classification dataset layout, and the reference classifier reporting top-1/top-5."""

from __future__ import annotations

import json

import pytest
import torch

from ophora.eval.cli import main
from ophora.eval.clips import EvalInputError
from ophora.eval.export import export_classification_dataset, read_class_index
from ophora.eval.train_classifier import topk_accuracy
from tests.eval.helpers import make_clips

SPECS = [(f"{phase}_{i}", phase, f"{phase} step") for phase in ("incision", "capsulorhexis", "hydrodissection")
         for i in range(4)]


def test_export_layout_labels_and_split(tmp_path):
    make_clips(tmp_path / "gen", SPECS + [("nolabel", None, "x")], frames=9)
    summary = export_classification_dataset(tmp_path / "gen", tmp_path / "ds", val_fraction=0.25, seed=1)
    assert (summary.train, summary.val, summary.skipped) == (9, 3, ["nolabel.mp4"])
    classes = read_class_index(tmp_path / "ds" / "classes.txt")
    assert classes[:3] == ["incision", "viscoelastic", "capsulorhexis"]  # the project's phases in surgical order
    lines = (tmp_path / "ds" / "train.txt").read_text().splitlines()
    assert (tmp_path / "ds" / "train.csv").read_text().splitlines() == lines
    for line in lines + (tmp_path / "ds" / "val.txt").read_text().splitlines():
        rel, label = line.split(" ")
        assert (tmp_path / "ds" / rel).is_file() and (tmp_path / "ds" / rel).with_suffix(".json").is_file()
        assert rel.startswith(f"videos/{classes[int(label)]}/")
    val_phases = sorted(line.split("/")[1] for line in (tmp_path / "ds" / "val.txt").read_text().splitlines())
    assert val_phases == ["capsulorhexis", "hydrodissection", "incision"]  # stratified: one per phase
    # Exporting again adds nothing twice.
    again = export_classification_dataset(tmp_path / "gen", tmp_path / "ds", val_fraction=0.25, seed=1)
    assert (tmp_path / "ds" / "train.txt").read_text().splitlines() == lines and again.train == 9


def test_export_aligns_with_an_external_class_index(tmp_path):
    make_clips(tmp_path / "gen", SPECS[:2] + SPECS[4:6], frames=9)
    index = tmp_path / "ophnet_phases.txt"
    index.write_text("0 Capsulorhexis\n1 Incision\n")
    export_classification_dataset(tmp_path / "gen", tmp_path / "ds", class_index=index)
    labels = {line.split("/")[1]: line.split(" ")[1] for line in (tmp_path / "ds" / "train.txt").read_text().splitlines()}
    assert labels == {"incision": "1", "capsulorhexis": "0"}
    make_clips(tmp_path / "gen2", [("h", "hydrodissection", "x")], frames=9)
    with pytest.raises(EvalInputError, match="not in the class index"):
        export_classification_dataset(tmp_path / "gen2", tmp_path / "ds2", class_index=index)
    export_classification_dataset(tmp_path / "gen2", tmp_path / "ds2", class_index=index, allow_new_classes=True)
    assert read_class_index(tmp_path / "ds2" / "classes.txt") == ["Capsulorhexis", "Incision", "hydrodissection"]


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_accuracy(logits, labels, ks=(1, 2, 5)) == {1: pytest.approx(100 / 3), 2: pytest.approx(200 / 3),
                                                           5: 100.0}


def test_export_then_train_reference_classifier_via_cli(tmp_path, capsys):
    make_clips(tmp_path / "gen", SPECS, frames=9, size=(48, 64))
    assert main(["export", "--generated", str(tmp_path / "gen"), "--out", str(tmp_path / "ds"),
                 "--val-fraction", "0.25"]) == 0
    assert main(["train-classifier", "--dataset", str(tmp_path / "ds"), "--epochs", "2", "--num-frames", "4",
                 "--size", "32", "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    assert "top-1" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val_clips"] == 3 and metrics["train_clips"] == 9 and metrics["num_classes"] == 12
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 100 and len(metrics["history"]) == 2
    assert (tmp_path / "run" / "model" / "config.json").is_file()
