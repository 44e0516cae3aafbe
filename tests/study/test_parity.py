"""Parity before blinding, on real clips of another size, rate and length than the generated ones: each
mismatch is refused with a table of what to change, or blinding makes the clips identical (geometry,
length, instructions); accepted differences are recorded and reported."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml

from ophora.study import ParityError, StudyError, StudyStore, load_definition
from ophora.study.cli import main
from ophora.study.definition import phase_wording
from ophora.study.parity import probe
from tests.study.helpers import full_answer, make_video


def _study(root: Path, *, real: dict, gen: dict, blinding: dict, n: int = 2, real_instructions: bool = True,
           **extra) -> Path:
    """Real clips from a manifest, generated clips with sidecars; ``real``/``gen`` are make_video options."""
    rows = ["path,phase" + (",instruction" if real_instructions else "")]
    for i in range(n):
        make_video(root / "real" / f"real_{i}.mp4", i, **real)
        rows.append(f"real_{i}.mp4,hydrodissection" + (f",Inject fluid carefully {i}" if real_instructions else ""))
    (root / "real" / "manifest.csv").write_text("\n".join(rows) + "\n")
    for i in range(n):
        clip = make_video(root / "gen" / f"gen_{i}.mp4", 50 + i, **gen)
        clip.with_suffix(".json").write_text(json.dumps({"model": "ophora", "phase": "hydrodissection",
                                                         "prompt": f"A generated prompt in another style {i}"}))
    data = {"slug": "parity", "title": "Parity", "seed": 1, "raters": ["a", "b"],
            "criteria": [{"name": "phase_matching", "shows_instruction": True}, {"name": "realism"}],
            "clip_sets": [{"name": "real", "source": "real", "manifest": "real/manifest.csv"},
                          {"name": "gen", "source": "generated", "model": "ophora", "folder": "gen"}],
            "blinding": blinding, **extra}
    path = root / "parity.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


HD_REAL = {"size": "1280x720", "fps": 25, "seconds": 10}
SD_GEN = {"size": "720x480", "fps": 8, "seconds": 6}


def _dark_bands(path: Path, band: int = 6) -> set[str]:
    """Edges of the middle frame that are uniform and dark: the bars letterboxing adds."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    frame = frames[len(frames) // 2].astype(float)
    edges = {"top": frame[:band], "bottom": frame[-band:], "left": frame[:, :band], "right": frame[:, -band:]}
    return {name for name, px in edges.items() if px.mean() < 24 and px.std() < 4}


def _blinded(store: StudyStore, slug: str):
    key = store.clips_frame(slug)
    return [(row.clip_set, Path(row.blinded_path)) for row in key.itertuples()]


def test_hd_real_and_sd_generated_clips_become_identical_with_the_default_crop(tmp_path):
    path = _study(tmp_path, real=HD_REAL, gen=SD_GEN, blinding={"width": 720, "height": 480, "fps": 8,
                                                               "max_seconds": 6, "crf": 30})
    definition = load_definition(path)
    assert definition.blinding.fit == "crop" and definition.instruction_source == "phase_template"
    with StudyStore(tmp_path / "p.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        report = store.check_parity(definition.slug, definition.clips())
        assert report.ok, report.message
        assert list(report.table["clip set"]) == ["real", "gen"]
        assert report.table.set_index("clip set").loc["real", "size"] == "1280x720"
        assert report.table.set_index("clip set").loc["real", "shown as"] == "720x480 crop, 8 fps, 48 frames"
        assert store.import_clips(definition.slug, definition.clips()) == 4
        files = _blinded(store, definition.slug)
    for clip_set, blinded in files:
        info = probe(blinded)
        assert (info.width, info.height, info.fps, info.frames) == (720, 480, 8.0, 48), (clip_set, info)
        assert _dark_bands(blinded) == set(), f"{clip_set} clip {blinded.name} has bars"


def test_letterbox_pads_only_when_chosen_and_refuses_other_aspect_ratios(tmp_path):
    path = _study(tmp_path, real={"size": "256x144", "fps": 8, "seconds": 1},
                  gen={"size": "192x128", "fps": 8, "seconds": 1},
                  blinding={"width": 192, "height": 128, "fps": 8, "crf": 30, "fit": "letterbox"})
    definition = load_definition(path)
    with StudyStore(tmp_path / "l.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        with pytest.raises(ParityError) as info:
            store.import_clips(definition.slug, definition.clips())
        assert "aspect: under fit: letterbox clips of aspect ratios [1.5, 1.778] get different bars" in str(info.value)
        assert "use fit: crop" in info.value.report.table.set_index("clip set").loc["real", "what to change"]
        assert not (tmp_path / "served").exists() or not list((tmp_path / "served").iterdir())
        # Accepted explicitly: imported, and the bars really differ (which is why it needed a waiver).
        assert store.import_clips(definition.slug, definition.clips(), accept_differences=["aspect"]) == 4
        bars = {clip_set: _dark_bands(blinded) for clip_set, blinded in _blinded(store, definition.slug)}
        assert bars == {"real": {"top", "bottom"}, "gen": set()}
        waivers = store.accepted_differences(definition.slug)
        assert [w["property"] for w in waivers] == ["aspect"]
        # A later import keeps the accepted difference without naming it again, and records it once.
        extra = make_video(tmp_path / "real" / "real_late.mp4", 9, size="256x144")
        late = [c for c in definition.clips() if c.clip_set == "real"][0]
        assert store.import_clips(definition.slug, [late.__class__(extra, "real", "real", "hydrodissection",
                                                                   None, "real")]) == 1
        assert len(store.accepted_differences(definition.slug)) == 1
        log = store.audit_log(definition.slug)
        assert "accept_difference" in set(log["action"])


def test_low_fps_and_small_generated_clips_are_refused_with_a_table_or_accepted_and_reported(tmp_path, capsys):
    path = _study(tmp_path, real={"size": "256x192", "fps": 25, "seconds": 1},
                  gen={"size": "64x48", "fps": 8, "seconds": 1},
                  blinding={"width": 128, "height": 96, "fps": 16, "crf": 30, "max_seconds": 1})
    db = tmp_path / "cli.db"
    assert main(["create", str(path), "--db", str(db), "--blind-dir", str(tmp_path / "served")]) == 0
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "fps: clip sets ['gen'] have fewer frames per second than the study's 16 fps (real: 16, gen: 8)" in out
    assert "size: clip sets ['gen'] would be enlarged 2.00x to 128x96, the others not" in out
    assert "set blinding.fps to 8" in out and "set blinding width/height to at most 64x48" in out
    assert main(["import", str(path), "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "the import was refused" in err and "--accept-difference fps" in err
    assert not (tmp_path / "served").exists() or not list((tmp_path / "served").iterdir())
    with pytest.raises(SystemExit):
        main(["import", str(path), "--db", str(db), "--accept-difference", "fps", "--accept-difference", "length"])
    assert "invalid choice: 'length'" in capsys.readouterr().err

    assert main(["import", str(path), "--db", str(db), "--accept-difference", "fps",
                 "--accept-difference", "size"]) == 0
    out = capsys.readouterr().out
    assert "imported 4 new clip(s)" in out and "accepted blinding differences" in out
    assert main(["open", "parity", "--db", str(db)]) == 0
    with StudyStore(db) as store:
        for code in store.reissue_codes("parity", ["a", "b"]).values():
            while (item := store.next_item(code)) is not None:
                a = full_answer(item)
                store.submit_rating(code, item.clip_id, a["scores"])
    capsys.readouterr()
    assert main(["status", "parity", "--db", str(db)]) == 0
    assert "fps: clip sets ['gen']" in capsys.readouterr().out
    assert main(["report", "parity", "--db", str(db), "--out", str(tmp_path / "r.html")]) == 0
    assert "accepted blinding difference: size" in capsys.readouterr().out
    html = (tmp_path / "r.html").read_text()
    assert "Accepted blinding differences" in html and "fps: clip sets" in html and "size: clip sets" in html
    assert main(["export", "parity", "--db", str(db), "--out", str(tmp_path / "x"), "--formats", "html"]) == 0
    assert "accepted blinding difference: fps" in capsys.readouterr().out


def test_clips_shorter_than_the_study_length_are_refused_by_name(tmp_path):
    """9-frame generated clips next to 6 s real ones: never shown shorter."""
    path = _study(tmp_path, real={"size": "96x64", "fps": 8, "seconds": 6.125},
                  gen={"size": "96x64", "fps": 8, "seconds": 9 / 8},
                  blinding={"width": 96, "height": 64, "fps": 8, "crf": 30, "max_seconds": 6.125})
    definition = load_definition(path)
    with StudyStore(tmp_path / "s.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        with pytest.raises(ParityError) as info:
            store.import_clips(definition.slug, definition.clips())
        message = str(info.value)
        assert "gen_0.mp4 (9 frames, 1.12 s), gen_1.mp4 (9 frames, 1.12 s)" in message
        assert "real_0" not in message.split("length:")[1].split(";")[0]
        assert sorted(Path(p).name for p in info.value.report.refused_clips) == ["gen_0.mp4", "gen_1.mp4"]
        assert store.clips_frame(definition.slug).empty and not (tmp_path / "served").exists()
        # The same clips without a study length: the lengths differ, so that is refused too, with the fix.
        data = yaml.safe_load(path.read_text())
        data["blinding"].pop("max_seconds")
        data["slug"] = "nolength"
        path.write_text(yaml.safe_dump(data))
        nolength = load_definition(path)
        store.create_study(nolength, blind_dir=tmp_path / "served2")
        with pytest.raises(ParityError, match=r"set blinding.max_seconds to 1.125 \(the shortest clip\)"):
            store.import_clips(nolength.slug, nolength.clips())


def test_instructions_for_every_clip_or_none(tmp_path):
    """Real clips without instructions: per_clip is refused by name; phase_template shows every clip of a
    phase the same wording from assets/phases.yaml, real or generated."""
    path = _study(tmp_path, real={"size": "64x48"}, gen={"size": "64x48"}, real_instructions=False,
                  blinding={"width": 64, "height": 48, "fps": 8, "crf": 30}, instruction_source="per_clip")
    definition = load_definition(path)
    with StudyStore(tmp_path / "i.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        with pytest.raises(ParityError, match="these clips have none: real_0.mp4, real_1.mp4; give every clip"):
            store.import_clips(definition.slug, definition.clips())
    path.write_text(path.read_text().replace("instruction_source: per_clip", "instruction_source: phase_template")
                    .replace("slug: parity", "slug: template"))
    definition = load_definition(path)
    with StudyStore(tmp_path / "i.db") as store:
        codes = store.create_study(definition, blind_dir=tmp_path / "served-t")
        assert store.import_clips(definition.slug, definition.clips()) == 4
        store.open_study(definition.slug)
        shown = set()
        while (item := store.next_item(codes["a"])) is not None:
            shown.add(item.instruction)
            store.submit_rating(codes["a"], item.clip_id, full_answer(item)["scores"])
    assert shown == {phase_wording("hydrodissection")}


def test_check_parity_needs_known_waivers(tmp_path, store_and_codes):
    store, slug, _ = store_and_codes
    with pytest.raises(StudyError, match="the differences that can be accepted are aspect, fps, size"):
        store.check_parity(slug, [], accept=["length"])


def _labelled(src: Path, dst: Path, *, sidecar: dict | None) -> Path:
    """A generated clip with the SYNTHETIC label burned in (what `ophora generate` writes by default), at a
    quarter of the sample's size; ``sidecar``: the provenance to write beside it (``None``: none at all)."""
    from ophora.generation.video import read_clip, write_clip

    frames, _ = read_clip(src)
    clip = write_clip(frames[:8, ::4, ::4], dst, fps=8, synthetic_mark=True)  # no provenance: no sidecar, no tag
    if sidecar is not None:
        clip.with_suffix(".json").write_text(json.dumps(sidecar))
    return clip


def test_clips_with_the_synthetic_label_are_refused_by_sidecar_or_by_pixels(tmp_path, capsys, sample_clips):
    path = _study(tmp_path, real={"size": "96x64"}, gen={"size": "96x64"},
                  blinding={"width": 96, "height": 64, "fps": 8, "crf": 30})
    hydro = next(c for c in sample_clips if "hydro" in c.name.lower())
    # Pixels only: the sidecar says nothing about a label (an edited or hand-written one).
    pixels = _labelled(hydro, tmp_path / "gen" / "gen_pixels.mp4", sidecar={"model": "ophora", "phase": "hydrodissection"})
    # Sidecar only: the generator's record says the label is there, even if the pixels were touched up.
    said = make_video(tmp_path / "gen" / "gen_said.mp4", 77, size="96x64")
    said.with_suffix(".json").write_text(json.dumps({"model": "ophora", "phase": "hydrodissection",
                                                     "synthetic_mark": True}))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "Clip sets match" not in out and "These clips cannot be shown to raters" in out
    assert "label: these clips show the SYNTHETIC label" in out and "gen_pixels.mp4" in out and "gen_said.mp4" in out
    assert "--no-mark" in out and "import them from History" in out
    assert "Raters could tell" not in out  # nothing else differs
    # The unlabelled clips alone match, and the check says no label was found.
    pixels.unlink(), said.unlink()
    assert main(["check", str(path)]) == 0
    assert "no clip shows the SYNTHETIC label" in capsys.readouterr().out


def test_barred_real_clips_lose_their_bars_and_damaged_files_are_named_as_damaged(tmp_path, capsys):
    from ophora.study.blinding import ffmpeg_exe

    path = _study(tmp_path, real={"size": "128x96"}, gen={"size": "128x96"},
                  blinding={"width": 64, "height": 48, "fps": 8, "crf": 30}, repeats=4)  # repeats: own encodes
    for clip in sorted((tmp_path / "real").glob("real_*.mp4")):  # 16-px black bars recorded with the picture
        barred = clip.with_name("bar_" + clip.name)
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(clip), "-vf", "scale=128:64,pad=128:96:0:16",
                        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", str(barred)], check=True)
        barred.replace(clip)
    definition = load_definition(path)
    # A truncated copy (a download cut off half-way) is damaged, not a difference between clip sets.
    gen0 = tmp_path / "gen" / "gen_0.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(gen0), "-c", "copy", "-movflags", "+faststart",
                    str(tmp_path / "whole.mp4")], check=True)
    original = gen0.read_bytes()
    gen0.write_bytes((tmp_path / "whole.mp4").read_bytes()[: len(original) // 2])
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "damaged: these files are damaged" in out and "gen_0.mp4 (" in out and "Raters could tell" not in out
    gen0.write_bytes(original)
    with StudyStore(tmp_path / "b.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        report = store.check_parity(definition.slug, definition.clips())
        assert report.ok, report.message
        assert "Uniform borders (black bars) of 2 clip(s) are cropped away" in report.message
        assert report.table.set_index("clip set").loc["gen", "borders"] == "none"
        assert store.import_clips(definition.slug, definition.clips()) == 4
    served = sorted((tmp_path / "served").glob("*.mp4"))
    assert len(served) == 4 + 2 * 4  # first readings and every clip's repeat for both raters
    assert [f.name for f in served if _dark_bands(f, band=3)] == [], "a blinded clip or repeat kept its bars"


def test_repeats_and_frame_size_must_fit_the_clips(tmp_path, capsys):
    path = _study(tmp_path, real={"size": "64x48"}, gen={"size": "64x48"},
                  blinding={"width": 640, "height": 480, "fps": 8, "crf": 30}, repeats=5)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "The study's settings do not fit these clips" in out
    assert "repeats: the study asks for 5 repeat readings per rater but has 4 clips; set repeats (count) to at most 4" in out
    assert "frame: the study frame 640x480 is larger than every clip" in out and "at most 64x48" in out
    data = yaml.safe_load(path.read_text())
    data["blinding"]["width"] = 100000
    path.write_text(yaml.safe_dump(data))
    assert main(["check", str(path)]) == 2
    assert "blinding.width: Input should be less than or equal to 4096" in capsys.readouterr().err
