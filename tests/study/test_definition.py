"""Study files: the shipped example validates; malformed files fail with messages that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ophora.study.definition import StudyDefinitionError, load_definition
from tests.study.helpers import write_study

REPO = Path(__file__).resolve().parents[2]


def test_example_study_file_validates():
    """The example needs nothing outside the repository (no ../shared): its clips are drawn by code."""
    definition = load_definition(REPO / "studies" / "example_cataract.yaml")
    assert all(REPO / "studies" in c.path.parents for c in definition.clips())
    assert definition.slug == "example-cataract"
    assert [c.name for c in definition.criteria] == ["phase_matching", "construction_realism", "action_realism"]
    assert definition.criterion("phase_matching").shows_instruction
    assert not definition.criterion("action_realism").shows_instruction
    assert "hydrodissection" in definition.phases and definition.ask_phase and definition.turing_test
    clips = definition.clips()
    assert {c.phase for c in clips} == {"hydrodissection", "phacoemulsification", "lens-implantation"}
    assert {(c.source, c.model) for c in clips} == {("real", "real"), ("generated", "demo-renderer")}
    assert definition.instruction_source == "phase_template" and definition.blinding.fit == "crop"


def test_manifest_and_sidecar_provenance(tmp_path):
    definition = load_definition(write_study(tmp_path, n_real=2, n_generated=2))
    clips = {c.path.name: c for c in definition.clips()}
    real = clips["real_case01.mp4"]
    assert (real.source, real.model, real.phase) == ("real", "real", "hydrodissection")
    assert real.instruction == "Inject fluid under the capsule rim 1"
    gen = clips["ophora_gen_00.mp4"]
    assert (gen.source, gen.model, gen.phase) == ("generated", "ophora", "phacoemulsification")
    assert gen.instruction.startswith("Remove the lens nucleus")  # from the generator's JSON sidecar


def _broken(tmp_path, mutate) -> Path:
    path = write_study(tmp_path, n_real=1, n_generated=1)
    data = yaml.safe_load(path.read_text())
    mutate(data)
    path.write_text(yaml.safe_dump(data))
    return path


CASES = [
    ("no title", lambda d: d.pop("title"), "'title' is missing"),
    ("no criteria", lambda d: d.update(criteria=[]), "criteria: List should have at least 1 item"),
    ("scale reversed", lambda d: d["criteria"][0].update(scale={"min": 5, "max": 1}), "must be smaller than max"),
    ("scale not int", lambda d: d["criteria"][0].update(scale={"min": 1, "max": "five"}), "criteria[0].scale.max: Input should be a valid integer (got 'five')"),
    ("anchor off scale", lambda d: d["criteria"][1].update(scale={"min": 1, "max": 5, "anchors": {7: "x"}}),
     "outside the scale"),
    ("duplicate criterion", lambda d: d["criteria"].append(dict(d["criteria"][0])), "listed twice"),
    ("bad source", lambda d: d["clip_sets"][0].update(source="fake"), "clip_sets[0].source: Input should be 'real' or 'generated' (got 'fake')"),
    ("generated without model", lambda d: d["clip_sets"][1].pop("model"), "need 'model'"),
    ("missing folder", lambda d: d["clip_sets"][1].update(folder="nowhere"), "does not exist"),
    ("folder and manifest", lambda d: d["clip_sets"][1].update(manifest="x.csv"), "exactly one of"),
    ("unknown field", lambda d: d.update(colour="blue"), "colour: unknown key 'colour'"),
    ("negative repeats", lambda d: d.update(repeats=-1), "repeats: Input should be greater than or equal to 0"),
    ("duplicate rater", lambda d: d.update(raters=["a", "a"]), "raters: lists rater 'a' twice"),
    ("rater twice after trimming", lambda d: d.update(raters=["a", " a "]), "lists rater 'a' twice"),
    ("odd blinding size", lambda d: d.update(blinding={"width": 65, "height": 48}), "even numbers"),
    ("unknown blinding key", lambda d: d.update(blinding={"bitrate": 5}), "blinding.bitrate: unknown key 'bitrate'"),
    # Every level is checked, and an unknown key names its path and the nearest valid key.
    ("typo in a scale", lambda d: d["criteria"][0].update(scael={"min": 1, "max": 5}),
     "criteria[0].scael: unknown key 'scael'; did you mean 'scale'?"),
    ("typo in turing", lambda d: d.update(turing_test={"enabled": True, "confidance": {"min": 1, "max": 5}}),
     "turing_test.confidance: unknown key 'confidance'; did you mean 'confidence'?"),
    ("typo in an anchor scale", lambda d: d["criteria"][1].update(scale={"min": 1, "max": 5, "ancors": {}}),
     "criteria[1].scale.ancors: unknown key 'ancors'; did you mean 'anchors'?"),
    ("typo in a clip set", lambda d: d["clip_sets"][0].update(phsae="incision"),
     "clip_sets[0].phsae: unknown key 'phsae'; did you mean 'phase'?"),
    ("typo in repeats", lambda d: d.update(repeats={"count": 1, "after_dais": 2}),
     "repeats.after_dais: unknown key 'after_dais'; did you mean 'after_days'?"),
    ("width as text", lambda d: d.update(blinding={"width": "720", "height": 480}),
     "blinding.width: Input should be a valid integer (got '720')"),
    ("crf out of range", lambda d: d.update(blinding={"crf": 60}), "blinding.crf: Input should be less than or equal to 51"),
    ("negative crf", lambda d: d.update(blinding={"crf": -1}), "blinding.crf: Input should be greater than or equal to 0"),
    ("zero length", lambda d: d.update(blinding={"max_seconds": 0}), "blinding.max_seconds: Input should be greater than 0"),
    ("unknown fit", lambda d: d.update(blinding={"fit": "stretch"}), "blinding.fit: Input should be 'crop' or 'letterbox'"),
    ("bad instruction source", lambda d: d.update(instruction_source="prompt"),
     "instruction_source: Input should be 'phase_template' or 'per_clip'"),
    ("two washouts", lambda d: d.update(repeats={"count": 1, "after_days": 1, "after_items": 3}), "not both"),
    ("set phase not in vocabulary", lambda d: d["clip_sets"][0].update(phase="appendectomy"), "not in the phase vocabulary"),
    ("bad slug", lambda d: d.update(slug="Bad Slug!"), "'slug'"),
]


@pytest.mark.parametrize("label,mutate,message", CASES, ids=[c[0] for c in CASES])
def test_malformed_study_files_get_clear_errors(tmp_path, label, mutate, message):
    path = _broken(tmp_path, mutate)
    with pytest.raises(StudyDefinitionError) as info:
        load_definition(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)  # the error names the file


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed\n")
    with pytest.raises(StudyDefinitionError, match="not valid YAML"):
        load_definition(bad)
    with pytest.raises(StudyDefinitionError, match="no such study file"):
        load_definition(tmp_path / "absent.yaml")


def test_unknown_phase_in_manifest_is_reported_with_the_clip(tmp_path):
    path = write_study(tmp_path, n_real=1, n_generated=0)
    manifest = tmp_path / "clips" / "real" / "manifest.csv"
    manifest.write_text("path,phase,instruction\nreal_case00.mp4,appendectomy,x\n")
    with pytest.raises(StudyDefinitionError, match=r"cannot tell the phase of real_case00\.mp4 \('appendectomy'\)"):
        load_definition(path).clips()


def test_non_utf8_manifest_names_file_and_line(tmp_path):
    (tmp_path / "real").mkdir()
    manifest = tmp_path / "real" / "manifest.csv"
    manifest.write_bytes("path,phase,instruction\na.mp4,incision,Kerat\u00f4me incision\n".encode("cp1252"))
    study = tmp_path / "s.yaml"
    study.write_text("""
slug: enc-check
title: Encoding check
criteria:
  - {name: realism, description: looks real, scale: {min: 1, max: 5}}
clip_sets:
  - {name: real_set, source: real, manifest: real/manifest.csv}
raters: [alice]
""")
    with pytest.raises(StudyDefinitionError, match=r"manifest\.csv, line 2: not UTF-8"):
        load_definition(study).clips()


def test_the_turing_margin_is_stated_in_the_study_file(tmp_path):
    """The report's "could not reliably tell" needs the AUC interval below 0.5 + margin, fixed before rating."""
    from ophora.study.definition import TURING_MARGIN, parse_definition

    data = yaml.safe_load(write_study(tmp_path, n_real=1, n_generated=1).read_text())
    assert parse_definition(data, base_dir=tmp_path).turing_margin == TURING_MARGIN == 0.1
    data["turing_test"] = {"enabled": True, "margin": 0.05}
    assert parse_definition(data, base_dir=tmp_path).turing_margin == 0.05
    data["turing_test"] = {"enabled": True, "margin": 0.6}
    with pytest.raises(StudyDefinitionError, match="margin"):
        parse_definition(data, base_dir=tmp_path)
