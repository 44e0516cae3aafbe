"""Walk everything a rater can reach (the rater API's answers, the blinded folder, the files' bytes and
container metadata) and find no trace of source, model, provenance or original name."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from ophora.generation.video import read_clip, write_clip
from ophora.study import ParityError, StudyStore, load_definition
from ophora.study.blinding import FIXED_MTIME, ffmpeg_exe
from ophora.study.definition import phase_wording
from ophora.study.screening import MARK_THRESHOLD, mark_score, measure_borders, sample_luma
from tests.study.helpers import full_answer, write_study

SECRET_SEED = "9876543210"
PROMPT = "Inject balanced salt solution under the capsule rim until a fluid wave frees the nucleus"
FORBIDDEN = ["ophora", "synthetic", "generated", "patient", "mary", "implantation", "hydrodissection",
             "lens", SECRET_SEED, "sidecar", "gen_set", "real_set", "provenance", "diffusers", "cogvideo"]


def _remux_with_metadata(src: Path, dst: Path, **tags: str) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-c", "copy"]
    for key, value in tags.items():
        cmd += ["-metadata", f"{key}={value}"]
    cmd += ["-metadata:s:v:0", "handler_name=Ophora generator track"]
    subprocess.run(cmd + [str(dst)], check=True)
    return dst


def _container_report(path: Path) -> str:
    """What a curious rater's media tool shows: ffmpeg's description of the container and every tag."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "ffmetadata", "-"],
                            capture_output=True, text=True)
    return result.stdout + result.stderr


def _with_bars(src: Path, dst: Path, bar: int = 40) -> Path:
    """A real recording letterboxed in the camera: ``bar``-px black bars above and below the picture."""
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf",
                    f"scale=iw:ih-{2 * bar},pad=iw:ih+{2 * bar}:0:{bar}", "-c:v", "libx264", "-preset", "ultrafast",
                    "-crf", "18", "-pix_fmt", "yuv420p", str(dst)], check=True)
    return dst


def _marked_generated(src: Path, dst: Path) -> Path:
    """What `python -m ophora generate` writes by default: the SYNTHETIC label burned into every frame,
    with the sidecar saying so."""
    frames, _ = read_clip(src)
    return write_clip(frames[:24], dst, fps=8, provenance={"model": "ophora", "phase": "hydrodissection",
                                                       "prompt": PROMPT}, synthetic_mark=True)


@pytest.fixture(scope="module")
def blinded_study(tmp_path_factory, sample_clips):
    """One study for the module (blinding real clips takes a while): the walk rates it, the key test reads
    only the clip key."""
    tmp_path = tmp_path_factory.mktemp("blinded")
    lens, hydro = (next(c for c in sample_clips if k in c.name.lower()) for k in ("lens", "hydro"))
    real = _remux_with_metadata(lens, tmp_path / "in" / "real" / "real_patient_042_lens.mp4",
                                title="St. Mary real recording patient 042", comment="real lens implantation")
    barred = _with_bars(hydro, tmp_path / "in" / "real" / "real_patient_043_hydro.mp4")
    gen = _remux_with_metadata(hydro, tmp_path / "in" / "gen" / "ophora_hydrodissection_seed9876543210.mp4",
                               title="Ophora synthetic hydrodissection", comment=f"model=ophora seed={SECRET_SEED}")
    gen.with_suffix(".json").write_text(json.dumps({"model": "ophora", "prompt": PROMPT, "seed": int(SECRET_SEED),
                                                    "synthetic": True, "phase": "hydrodissection"}))
    # The inputs really do carry the secrets, so a leak would be caught below.
    assert b"ophora" in gen.read_bytes().lower() and b"patient 042" in real.read_bytes().lower()
    (tmp_path / "in" / "real" / "manifest.csv").write_text(
        "path,phase,instruction\nreal_patient_042_lens.mp4,lens implantation,"
        "Insert the folded intraocular lens into the capsular bag with an injector\n"
        f"{barred.name},hydrodissection,Inject fluid under the rim\n")
    study = tmp_path / "blind.yaml"
    study.write_text("""
slug: blinding-check
title: Blinding check
criteria:
  - {name: phase_matching, description: matches the instruction, shows_instruction: true, scale: {min: 1, max: 5}}
  - {name: realism, description: looks real, scale: {min: 1, max: 5}}
ask_phase: true
turing_test: true
clip_sets:
  - {name: real_set, source: real, manifest: in/real/manifest.csv}
  - {name: gen_set, source: generated, model: ophora, folder: in/gen}
raters: [alice, bob]
repeats: 1
blinding: {width: 360, height: 240}
""")
    definition = load_definition(study)
    store = StudyStore(tmp_path / "db" / "study.db")
    codes = store.create_study(definition, blind_dir=tmp_path / "served")
    # A clip with the generator's visible label never enters: refused by name, with how to get unlabelled ones.
    marked = _marked_generated(hydro, tmp_path / "in" / "gen" / "ophora_marked.mp4")
    with pytest.raises(ParityError) as refused:
        store.import_clips(definition.slug, definition.clips())
    assert "ophora_marked.mp4" in str(refused.value) and "--no-mark" in str(refused.value)
    assert "import them from History" in str(refused.value)
    assert not (tmp_path / "served").exists() or not any((tmp_path / "served").iterdir())
    marked.unlink()
    marked.with_suffix(".json").unlink()
    store.import_clips(definition.slug, definition.clips())
    store.open_study(definition.slug)
    yield store, definition, codes, tmp_path / "served"
    store.close()


def _visible(item) -> str:
    return json.dumps(dataclasses.asdict(item), sort_keys=True)


def test_nothing_a_rater_can_reach_reveals_source_or_model(blinded_study):
    store, definition, codes, served = blinded_study
    texts: list[str] = []
    items = []
    for code in codes.values():
        texts.append(json.dumps(dataclasses.asdict(store.rater_progress(code))))
        while (item := store.next_item(code)) is not None:
            items.append(item)
            texts.append(_visible(item))
            a = full_answer(item)
            store.submit_rating(code, item.clip_id, a["scores"], phase=a["phase"], turing="real", confidence=3)
    assert len(items) == 2 * 4

    # 1. API answers: only opaque ids and the blinded folder. The instruction (phase matching needs it) is
    #    the phase's wording from assets/phases.yaml for real and generated clips alike: neither its presence
    #    nor its style says where a clip came from, and the generator's own prompt never reaches the rater.
    wordings = {phase_wording(p) for p in ("hydrodissection", "lens-implantation")}
    for item in items:
        assert re.fullmatch(r"c[0-9a-f]{16}", item.clip_id)
        assert Path(item.video_path).parent == served.resolve()
        assert item.instruction in wordings
    assert {item.instruction for item in items} == wordings
    for text_ in texts:
        assert PROMPT not in text_ and "Insert the folded intraocular lens" not in text_
        assert "Inject fluid under the rim" not in text_
        scrubbed = text_
        # the wording names the phase, and the phase list names every phase: strip those, then search
        for wording in wordings:
            scrubbed = scrubbed.replace(wording, "")
        for phase in definition.phases:
            scrubbed = scrubbed.replace(phase, "")
        for word in FORBIDDEN:
            assert word not in scrubbed.lower(), f"{word!r} reaches the rater: {scrubbed[:300]}"

    # 2. The served folder: opaque names, identical times, no sidecars or stray files, no hard links (a
    #    link count of 2 would mark a repeat: each repeat is its own copy with its own name).
    files = sorted(served.iterdir())
    assert len(files) == 3 + 2  # three clips + one repeat copy per rater
    assert len({item.clip_id for item in items}) == 5  # 3 clips + 2 repeat copies: a repeat has its own id
    inodes = set()
    for f in files:
        assert re.fullmatch(r"c[0-9a-f]{16}\.mp4", f.name)
        assert int(f.stat().st_mtime) == FIXED_MTIME
        assert f.stat().st_nlink == 1
        inodes.add(f.stat().st_ino)
    assert len(inodes) == len(files)
    # Sizes per source: reported, not asserted (size follows content, as for any real video).
    key = store.clips_frame(definition.slug)
    for row in key.itertuples():
        print(f"blinded size {row.source}: {Path(row.blinded_path).stat().st_size} bytes")

    # 3. The files themselves: no tag, track name or byte string naming source, model or original name.
    reports = []
    for f in files:
        blob = f.read_bytes().lower()
        # Compressed video is random-looking bytes: search long words anywhere, short ones (which random
        # bytes could spell by chance) only inside printable runs, where tags and names would live.
        runs = b"\n".join(re.findall(rb"[\x20-\x7e]{8,}", blob))
        for word in FORBIDDEN + ["real_patient", "seed", "title", "comment"]:
            haystack = blob if len(word) >= 6 else runs
            assert word.encode().lower() not in haystack, f"{word!r} found inside {f.name}"
        # The generator's encoder fingerprint (x264 build and settings of the sample clips) is gone too.
        assert b"core 159" not in blob and b"2003-2019" not in blob
        report = _container_report(f)
        reports.append(report)
        # 3b. The picture: the barred real clip lost its bars (no clip has uniform edges), and no clip shows
        #     the label (its corner does not look like the label drawn at this size).
        luma = sample_luma(f)
        assert not measure_borders(luma).any, f"{f.name} has borders after blinding"
        assert mark_score(luma) < MARK_THRESHOLD
        for word in FORBIDDEN + ["real recording"]:
            assert word not in report.lower(), f"{word!r} in container metadata of {f.name}"

    # 4. Real and generated clips were encoded identically: same codec line, size, fps, pixel format.
    def stream_line(report: str) -> str:
        line = next(l for l in report.splitlines() if "Video:" in l)
        return re.sub(r"\d+ kb/s", "", line)

    assert len({stream_line(r) for r in reports}) == 1
    assert "360x240" in stream_line(reports[0]) and "8 fps" in stream_line(reports[0])


def test_unblinding_key_is_kept_for_the_analysis(blinded_study):
    store, definition, codes, served = blinded_study
    key = store.clips_frame(definition.slug)
    key = key.set_index(key["original_path"].map(lambda p: Path(p).name))
    assert key.loc["ophora_hydrodissection_seed9876543210.mp4", "model"] == "ophora"
    assert key.loc["ophora_hydrodissection_seed9876543210.mp4", "instruction"] == PROMPT  # kept, never shown
    assert key.loc["real_patient_042_lens.mp4", "phase"] == "lens-implantation"
    assert key.loc["real_patient_043_hydro.mp4", "source"] == "real"
    assert "ophora_marked.mp4" not in key.index


def test_files_are_written_in_a_shuffled_order_without_links(tmp_path):
    """Creation order (change time, then inode) must not follow clip sets, and repeat copies must not all
    come last: a rater listing the folder by date would otherwise see the import order."""
    definition = load_definition(write_study(tmp_path, n_real=6, n_generated=6, raters=("a", "b", "c"), repeats=2))
    with StudyStore(tmp_path / "o.db") as store:
        store.create_study(definition, blind_dir=tmp_path / "served")
        store.import_clips(definition.slug, definition.clips())
        key = store.clips_frame(definition.slug)
    source = {Path(p).name: s for p, s in zip(key["blinded_path"], key["source"])}
    files = sorted((tmp_path / "served").iterdir(), key=lambda f: (f.stat().st_ctime_ns, f.stat().st_ino))
    assert len(files) == 12 + 3 * 2 and all(f.stat().st_nlink == 1 for f in files)
    order = [source.get(f.name, "repeat") for f in files]
    firsts = [o for o in order if o != "repeat"]
    runs = 1 + sum(a != b for a, b in zip(firsts, firsts[1:]))
    assert runs > 2, f"files were written grouped by source: {order}"
    assert order[-6:] != ["repeat"] * 6, "repeat copies were written after every first clip"
    sizes = key.assign(size=[Path(p).stat().st_size for p in key["blinded_path"]]).groupby("source")["size"]
    print("blinded sizes per source (bytes):", sizes.describe()[["mean", "min", "max"]].to_dict("index"))
