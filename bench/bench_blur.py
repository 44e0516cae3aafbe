"""Measure `privacy.frame_hits: blur` under attack: clips with identifying text or a face the screens were not
tuned on, curated with blur, released, and checked frame by frame.

Clips are 49-frame windows of the real Ophora clips: half with one random line of identifying text burned in
on frames 10-29 (ophora/curation/screen_corpus.py: random strings, fonts, sizes, colours, bands, places;
seed 2031, not the seed the text screen was checked on), half with a held-out face (ophora/curation/face_corpus.py:
LFW faces 50-99, never used to tune the face screen) pasted on frames 20-28 at 20-60% of the frame height, at a
random place. Both go through the real `run_pipeline` and `release`. Prints, per kind: clips the screens
found (the others are released unblurred in blur mode: the limit), clips released blurred, clips withheld
after the second screening, the share of the overlay's pixels (text with its band, if any; the pasted face
picture) covered in the released video, on frames the screens flagged and on the overlay's other frames, and
for text an independent reader: Tesseract on every whole released frame of the overlay (the screens read
only the regions their cheap pass finds), before and after blurring.

Usage: python bench/bench_blur.py [--clips 40]
Timings are not the point here; the counts do not depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CAPTION = "Inject fluid under the capsule with a cannula to free the nucleus."
TEXT_FRAMES, FACE_FRAMES = range(10, 30), range(20, 29)


def make_clips(folder: Path, count: int) -> list[dict]:
    """``count`` clips, alternately text and face, each with the clean frames it was made from."""
    import cv2

    from ophora.curation.face_corpus import HEIGHTS, face_images, paste
    from ophora.curation.screen_corpus import burned_in_frames
    from ophora.generation.video import read_clip, write_clip

    real = [read_clip(path)[0] for path in sorted((REPO.parent / "shared/samples/ophora-generated").glob("*.mp4"))]
    faces = face_images("held-out")
    rng = np.random.default_rng(2031)
    clips = []
    for k in range(count):
        clean = real[k % len(real)]
        kind = "text" if k % 2 == 0 else "face"
        made = clean.copy()
        if kind == "text":
            for i in TEXT_FRAMES:  # the same random line on every frame: one seed per clip
                made[i] = burned_in_frames([clean[i]], 1, seed=2031 + k)[0]
        else:
            face, height, seed = faces[int(rng.integers(len(faces)))], HEIGHTS[k // 2 % len(HEIGHTS)], 2031 + k
            for i in FACE_FRAMES:  # the same place and brightness on every frame
                bgr = paste(cv2.cvtColor(clean[i], cv2.COLOR_RGB2BGR), face, height, np.random.default_rng(seed))
                made[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        path = write_clip(made, folder / f"{kind}{k:03d}.mp4", fps=8)
        clips.append({"clip_id": path.stem, "kind": kind, "path": path, "clean": clean, "made": made})
    return clips


def coverage(clip: dict, covers: list[tuple[int, ...]], flagged: set[int]) -> tuple[list[float], list[float]]:
    """Share of the overlay's pixels inside a cover box, per overlay frame: (flagged frames, the others)."""
    frames = TEXT_FRAMES if clip["kind"] == "text" else FACE_FRAMES
    on, off = [], []
    for i in frames:
        changed = np.abs(clip["made"][i].astype(np.int16) - clip["clean"][i]).max(axis=2) > 40
        if clip["kind"] == "face":  # JPEG noise outside the face: keep the pasted rectangle's solid part
            changed = changed & (np.abs(clip["made"][i].astype(np.int16) - clip["clean"][i]).mean(axis=2) > 20)
        if not changed.any():
            continue
        covered = np.zeros_like(changed)
        for low, high, x, y, w, h in covers:
            if low <= i <= high:
                covered[y:y + h, x:x + w] = True
        (on if i in flagged else off).append(float((changed & covered).sum() / changed.sum()))
    return on, off


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--verbose", action="store_true", help="per clip: flagged frames, boxes, coverage")
    args = parser.parse_args()

    import pandas as pd

    from ophora.curation.config import load_config
    from ophora.curation.inputs import read_tasks
    from ophora.curation.pipeline import run_pipeline
    from ophora.curation.privacy import TextScreen
    from ophora.curation.release import blur_plan, load_salt, release, released_id
    from ophora.generation.video import read_clip

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        clips = make_clips(folder, args.clips)
        pd.DataFrame([{"clip_id": c["clip_id"], "video": c["path"].name, "caption": CAPTION} for c in clips]) \
            .to_csv(folder / "clips.csv", index=False)
        config = load_config(overrides=["dynamics.enabled=false", "privacy.frame_hits=blur"])
        rows = run_pipeline(read_tasks(folder / "clips.csv"), config, folder / "curated.parquet", workers=2)
        rows = rows.set_index("clip_id")
        card = release(folder / "curated.parquet", folder / "release", progress=False)
        withheld = {reason: n for reason, n in card["reasons_detail"].items() if reason.startswith("release:")}
        salt, reader = load_salt(folder / "curated.release-salt"), TextScreen(config["privacy"]["text_prescreen"])
        for kind in ("text", "face"):
            mine = [c for c in clips if c["kind"] == kind]
            found, on, off, read_before, read_after, read_frames = 0, [], [], 0, 0, 0
            for clip in mine:
                row = rows.loc[clip["clip_id"]].to_dict()
                regions = json.loads(row["blur_regions"]) if isinstance(row.get("blur_regions"), str) else []
                if row["decision"] != "keep":
                    print(f"  {clip['clip_id']}: {row['reason']}")
                    continue
                flagged = {r["frame"] for r in regions}
                overlay = set(TEXT_FRAMES if kind == "text" else FACE_FRAMES)
                if not flagged & overlay:
                    if flagged:
                        print(f"  {clip['clip_id']}: missed; flagged only frames without it: {sorted(flagged)}")
                    continue  # missed: released as it is (or covered where a false alarm was)
                found += 1
                clip_on, clip_off = coverage(clip, blur_plan(row, "blur"), flagged)
                video = folder / "release/videos" / f"{released_id(salt, clip['clip_id'])}.mp4"
                if args.verbose:
                    print(f"  {clip['clip_id']}: flagged {sorted(flagged)}, covers {blur_plan(row, 'blur')}, "
                          f"coverage off {[round(v, 2) for v in clip_off]}, released {video.is_file()}")
                on += clip_on
                off += clip_off
                if kind == "text" and video.is_file():
                    released = read_clip(video)[0]
                    for i in TEXT_FRAMES[::4]:  # 5 frames of the 20 per clip: whole-frame OCR is slow
                        read_frames += 1
                        read_before += reader.words(clip["made"][i]) > 0
                        read_after += reader.words(released[i]) > 0
            print(f"{kind}: {len(mine)} clips, the screens found {found} (the other {len(mine) - found} are "
                  f"released unblurred: what the screens miss is not covered)")
            if on:
                print(f"  the screens flagged {len(on)} of the {len(on) + len(off)} overlay frames of these clips")
                print(f"  overlay pixels covered on flagged frames: mean {np.mean(on):.3f}, min {min(on):.3f}")
            if read_frames:
                print(f"  whole-frame Tesseract reads a word on {read_before} of {read_frames} overlay frames "
                      f"before blurring, on {read_after} of the same frames released blurred")
            if off:
                print(f"  overlay pixels covered on the frames the screens did not flag: mean {np.mean(off):.3f}, "
                      f"{sum(v >= 0.99 for v in off)} of {len(off)} frames covered")
        counts = card["counts"]
        print(f"release: {counts['released_blurred']} clips released blurred, {counts['withheld_after_blurring']} "
              f"withheld after the second screening; withheld reasons: {withheld}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
