"""Write generated clips with their phase labels as a video-classification dataset, to add to OphNet training.

Layout, as read by mmaction2's ``VideoDataset`` (``ann_file`` lines ``<path> <label>``, paths relative to
``data_prefix``) and by SlowFast's Kinetics-style loader (``train.csv`` / ``val.csv`` with the same
space-separated lines)::

    out/videos/<phase>/<clip>.mp4 (+ .json provenance)
    out/classes.txt     one class name per line; line n (0-based) is label n
    out/train.txt  out/val.txt      "videos/<phase>/<clip>.mp4 <label>"
    out/train.csv  out/val.csv      the same lines, the names SlowFast expects

Pass OphNet's class list as ``class_index`` so labels line up with the real training set; running the export
again adds clips to an existing dataset instead of overwriting it. Synthetic clips normally go to train only
(``val_fraction=0``): validation and test should stay real.
"""

from __future__ import annotations

import filecmp
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ophora.eval.clips import ClipRecord, EvalInputError, _normalise_phase, collect_clips


@dataclass
class ExportSummary:
    out_dir: Path
    classes: list[str]
    train: int
    val: int
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"Dataset at {self.out_dir}: {self.train} train and {self.val} val clips added, "
                 f"{len(self.classes)} classes (classes.txt, train.txt/val.txt, train.csv/val.csv)."]
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} clip(s) without a phase label: {', '.join(self.skipped[:5])}")
        return "\n".join(lines)


def read_class_index(path: str | Path) -> list[str]:
    """Class names from ``name`` lines (mmaction2 label map) or ``index name`` lines (UCF101 classInd style)."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if not line:
            continue
        first, _, rest = line.partition(" ")
        entries.append((int(first), rest.strip()) if first.isdigit() and rest else (number, line))
    indices = sorted(i for i, _ in entries)
    base = indices[0] if indices else 0
    if indices != list(range(base, base + len(indices))):
        raise EvalInputError(f"{path}: class indices must be consecutive; got {indices[:10]}...")
    return [name for _, name in sorted(entries)]


def _split(records: list[ClipRecord], val_fraction: float, seed: int) -> tuple[list[ClipRecord], list[ClipRecord]]:
    """Stratified by phase and reproducible from ``seed``."""
    train, val = [], []
    rng = random.Random(seed)
    for phase in sorted({r.phase for r in records}):
        group = sorted((r for r in records if r.phase == phase), key=lambda r: str(r.path))
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        val += group[:n_val]
        train += group[n_val:]
    return train, val


def _same_clip(source: Path, existing: Path) -> bool:
    if existing.is_symlink():
        return existing.resolve() == source.resolve()
    return filecmp.cmp(source, existing, shallow=False)


def _place(record: ClipRecord, dest_dir: Path, link: bool) -> Path:
    """Copy (or link) a clip under its phase folder; a clip exported before is reused, a name clash renamed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest, counter = dest_dir / record.path.name, 2
    while dest.exists() or dest.is_symlink():
        if _same_clip(record.path, dest):
            return dest
        dest, counter = dest_dir / f"{record.path.stem}_{counter}{record.path.suffix}", counter + 1
    if link:
        os.symlink(record.path.resolve(), dest)
    else:
        shutil.copy2(record.path, dest)
        sidecar = record.path.with_suffix(".json")
        if sidecar.is_file():  # provenance travels with the clip
            shutil.copy2(sidecar, dest.with_suffix(".json"))
    return dest


def _append_lines(path: Path, lines: list[str]) -> None:
    existing = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    new = [line for line in lines if line not in set(existing)]
    path.write_text("\n".join(existing + new) + ("\n" if existing or new else ""), encoding="utf-8")


def export_classification_dataset(sources: list[str | Path] | str | Path, out_dir: str | Path,
                                  class_index: str | Path | None = None, val_fraction: float = 0.0,
                                  seed: int = 0, link: bool = False,
                                  allow_new_classes: bool = False) -> ExportSummary:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    records = [r for source in sources for r in collect_clips(source, "generated set")]
    skipped = [r.path.name for r in records if not r.phase]
    records = [r for r in records if r.phase]
    if not records:
        raise EvalInputError("None of the clips has a phase label (sidecar 'phase', manifest 'phase' column or a "
                             "phase subfolder), so there is nothing to label.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes_file = out_dir / "classes.txt"
    if class_index is not None:
        classes = read_class_index(class_index)
    elif classes_file.is_file():
        classes = read_class_index(classes_file)
    else:
        from ophora.vocabulary import load_phases

        classes = [p.id for p in load_phases()]  # the project's surgical phases, in surgical order
    by_key = {(_normalise_phase(name) or name): index for index, name in enumerate(classes)}
    unknown = sorted({r.phase for r in records} - set(by_key))
    if unknown and not allow_new_classes:
        raise EvalInputError(f"Phases {unknown} are not in the class index ({len(classes)} classes). Map them in "
                             f"the class file, or pass --allow-new-classes to append them as new labels.")
    for phase in unknown:
        by_key[phase] = len(classes)
        classes.append(phase)
    classes_file.write_text("\n".join(classes) + "\n", encoding="utf-8")

    train, val = _split(records, val_fraction, seed)
    counts = {}
    for split, members in (("train", train), ("val", val)):
        lines = []
        for record in members:
            dest = _place(record, out_dir / "videos" / record.phase, link)
            lines.append(f"{dest.relative_to(out_dir).as_posix()} {by_key[record.phase]}")
        _append_lines(out_dir / f"{split}.txt", lines)
        _append_lines(out_dir / f"{split}.csv", lines)
        counts[split] = len(lines)
    return ExportSummary(out_dir, classes, counts["train"], counts["val"], skipped)
