"""Parity before blinding: would a rater be able to tell clip sets apart after re-encoding?

Blinding re-encodes every clip to the study's size, fps and length, but it cannot add what a clip lacks: a
clip shorter than the study length would play shorter, a low frame rate stays choppy when frames are
repeated, a small picture stays soft when scaled up, and under ``fit: letterbox`` clips of another aspect
ratio get other bars. Instructions shown with the clip must exist for every clip or for none. What is drawn
into the picture is screened too (:mod:`ophora.study.screening`): a clip showing the project's SYNTHETIC
label is refused, and uniform borders (black bars) are measured so blinding crops them away. A damaged
(truncated) file is named as damaged. This module measures every clip, compares the clip sets on what a
rater will perceive after blinding and says per clip set what differs and what to change. Some differences may be accepted
explicitly (``--accept-difference``); the waiver is recorded with the study and printed in every report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ophora.study.definition import ClipSpec, StudyDefinition, phase_wording
from ophora.study.screening import PictureScreen, screen_clip

# Differences a study lead may accept (recorded in the study, the audit log and every report). A clip
# shorter than the study length and a missing instruction cannot be accepted: they would be shown as is.
WAIVABLE = {
    "fps": "frame rate: clips below the study fps are shown with repeated frames (choppier motion)",
    "size": "picture size: clips smaller than the study size are scaled up (softer picture)",
    "aspect": "aspect ratio under fit: letterbox: clips of another aspect ratio get other bars",
}
UPSCALE_TOLERANCE = 1.05  # scaling up by up to 5% is invisible
ASPECT_TOLERANCE = 0.01
# Problems that are about the files, not about what tells clip sets apart (the report's headline differs).
FILE_PROBLEMS = ("damaged", "label", "blank")
SETTING_PROBLEMS = ("repeats", "frame")


@dataclass(frozen=True)
class ClipInfo:
    """What ffmpeg reports about one clip's first video stream."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    declared_seconds: float | None = None  # the duration the container announces

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def damaged(self) -> bool:
        """Fewer frames can be read than the container announces: a truncated or partly overwritten file."""
        if not self.declared_seconds:
            return False
        return self.seconds < self.declared_seconds - max(0.5, 0.05 * self.declared_seconds)

    @property
    def aspect(self) -> float:
        return self.width / self.height


def probe(path: str | Path) -> ClipInfo:
    """Size, fps and frame count of a video (a readable video, or ``ValueError`` naming the file)."""
    import imageio_ffmpeg

    path = Path(path)
    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        reader.close()
        frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except (RuntimeError, OSError, StopIteration) as exc:
        last = [line for line in str(exc).strip().splitlines() if line.strip()][-1:] or ["no video stream"]
        raise ValueError(f"{path} is not a readable video ({last[0].strip()})") from None
    width, height = meta.get("source_size") or meta["size"]
    return ClipInfo(path=path, width=int(width), height=int(height), fps=float(meta["fps"]), frames=int(frames),
                    declared_seconds=float(meta["duration"]) if meta.get("duration") else None)


@dataclass
class ParityReport:
    """The outcome of :func:`check_parity`.

    ``table``: one row per clip set (what its clips are, what raters will see after blinding, what to
    change); ``problems``: one line per difference (``property: explanation``); ``waived``: accepted
    differences that were found; ``message``: the text to show a study lead (table included)."""

    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    waived: list[str] = field(default_factory=list)
    refused_clips: list[str] = field(default_factory=list)
    screens: dict[Path, PictureScreen] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def message(self) -> str:
        cropped = sum(s.borders.any for s in self.screens.values())
        borders = (f" Uniform borders (black bars) of {cropped} clip(s) are cropped away before fitting the frame."
                   if cropped else "")
        if self.ok and not self.waived:
            return ("Clip sets match: after blinding every clip has the same size, frame rate and length, and "
                    "no clip shows the SYNTHETIC label." + borders)
        lines = []
        kind = {p: p.split(":", 1)[0] for p in self.problems}
        files = [p for p in self.problems if kind[p] in FILE_PROBLEMS]
        settings = [p for p in self.problems if kind[p] in SETTING_PROBLEMS]
        tells = [p for p in self.problems if p not in files and p not in settings]
        if files:
            lines.append("These clips cannot be shown to raters, so the import was refused:")
            lines += [f"  - {p}" for p in files]
        if settings:
            lines.append("The study's settings do not fit these clips, so the import was refused:")
            lines += [f"  - {p}" for p in settings]
        if tells:
            lines.append("Raters could tell these clip sets apart after blinding, so the import was refused:")
            lines += [f"  - {p}" for p in tells]
        if self.waived:
            lines.append("Accepted differences (recorded with the study and printed in every report):")
            lines += [f"  - {w}" for w in self.waived]
        lines.append(self.table.to_string(index=False))
        return "\n".join(lines)


def _span(values: list, fmt: str = "{}") -> str:
    unique = sorted(set(values))
    if not unique:
        return "-"
    return fmt.format(unique[0]) if len(unique) == 1 else f"{fmt.format(unique[0])}-{fmt.format(unique[-1])}"


def _upscale(picture: tuple[int, int], width: int, height: int, fit: str) -> float:
    """How much the picture (borders cropped) is enlarged to fill the study frame (> 1: softer than the source)."""
    factors = (width / picture[0], height / picture[1])
    return max(factors) if fit == "crop" else min(factors)


def _names(paths: list, limit: int = 8) -> str:
    return ", ".join(Path(p).name for p in paths[:limit]) + (f" and {len(paths) - limit} more"
                                                             if len(paths) > limit else "")


def _screen_files(clips: list[ClipSpec], infos: dict[Path, ClipInfo], screens: dict[Path, PictureScreen],
                  problems: list[str], refused: list[str], fixes: dict[str, list[str]]) -> list[ClipSpec]:
    """Probe and screen every clip; damaged, labelled and blank ones become problems (never waivable).
    Returns the clips that can be compared."""
    damaged: list[tuple[ClipSpec, str]] = []
    for spec in clips:
        try:
            if spec.path not in infos:
                infos[spec.path] = probe(spec.path)
            info = infos[spec.path]
            if info.damaged:
                damaged.append((spec, f"{spec.path.name} ({info.seconds:.2f} of {info.declared_seconds:.2f} s "
                                      f"readable)"))
            elif spec.path not in screens:
                screens[spec.path] = screen_clip(spec.path, info.frames)
        except ValueError as exc:
            damaged.append((spec, f"{spec.path.name} ({str(exc).split('(', 1)[-1].rstrip(')')})"))
    if damaged:
        problems.append("damaged: these files are damaged (truncated or unreadable), not a difference between "
                        "clip sets: " + "; ".join(text for _, text in damaged[:8]) +
                        "; copy or export them again, or leave them out")
        for spec, _ in damaged:
            refused.append(str(spec.path))
            fixes[spec.clip_set].append(f"{spec.path.name} is damaged")
    marked = [s for s in clips if s.path in screens and screens[s.path].marked]
    if marked:
        problems.append(f"label: these clips show the SYNTHETIC label in the picture, which would tell raters "
                        f"the answer: {_names([s.path for s in marked])}; use unlabelled clips: generate them with "
                        f"`python -m ophora generate ... --no-mark`, or import them from History in the app "
                        f"(it keeps an unlabelled copy of every clip)")
        for spec in marked:
            refused.append(str(spec.path))
            fixes[spec.clip_set].append(f"{spec.path.name} shows the SYNTHETIC label")
    blank = [s for s in clips if s.path in screens and screens[s.path].blank and s not in marked]
    if blank:
        problems.append(f"blank: the picture of these clips is mostly a uniform area (borders "
                        f"{'; '.join(screens[s.path].borders.describe() for s in blank[:3])}): "
                        f"{_names([s.path for s in blank])}; check the files and leave them out")
        for spec in blank:
            refused.append(str(spec.path))
            fixes[spec.clip_set].append(f"{spec.path.name} is mostly blank")
    return [s for s in clips if s.path in screens and str(s.path) not in refused]


def check_parity(definition: StudyDefinition, clips: Iterable[ClipSpec], *, accept: Iterable[str] = (),
                 infos: dict[Path, ClipInfo] | None = None,
                 screens: dict[Path, PictureScreen] | None = None) -> ParityReport:
    """Compare the clip sets of ``clips`` on what a rater perceives after blinding with the study's settings.

    ``accept`` names differences from :data:`WAIVABLE` the lead accepts. ``infos`` and ``screens`` may hold
    already probed and screened clips. Nothing is encoded; each clip is probed and a few of its frames are
    decoded (about 0.1-1 s a clip)."""
    accept = {a.strip().lower() for a in accept}
    unknown = sorted(accept - set(WAIVABLE))
    if unknown:
        raise ValueError(f"cannot accept {unknown}: the differences that can be accepted are "
                         f"{', '.join(sorted(WAIVABLE))} (a short clip or a missing instruction cannot)")
    b = definition.blinding
    clips = list(clips)
    infos = dict(infos or {})
    screens = dict(screens or {})
    problems: list[str] = []
    waived: list[str] = []
    refused: list[str] = []
    fixes: dict[str, list[str]] = {spec.clip_set: [] for spec in clips}
    clips = _screen_files(clips, infos, screens, problems, refused, fixes)
    sets: dict[str, list[ClipSpec]] = {}
    for spec in clips:
        sets.setdefault(spec.clip_set, []).append(spec)

    def differ(prop: str, text: str, culprits: list[str], fix: str) -> None:
        for name in culprits:
            fixes[name].append(fix if prop not in accept else f"{prop} accepted")
        if prop in accept:
            waived.append(f"{prop}: {text}")
        else:
            problems.append(f"{prop}: {text}; {fix}, or accept it with --accept-difference {prop}")

    # Length: every clip is trimmed to the study length; a shorter one is refused by name.
    if b.max_seconds is not None:
        short = [(s, infos[s.path]) for s in clips if infos[s.path].seconds < b.max_seconds - 0.5 / b.fps]
        for spec, info in short:
            refused.append(str(spec.path))
            fixes[spec.clip_set].append(f"{spec.path.name} is {info.seconds:.2f} s: replace it or lower max_seconds")
        if short:
            names = ", ".join(f"{s.path.name} ({i.frames} frames, {i.seconds:.2f} s)" for s, i in short[:8])
            more = f" and {len(short) - 8} more" if len(short) > 8 else ""
            problems.append(f"length: the study shows {b.max_seconds:g} s per clip, but these clips are shorter and "
                            f"would play shorter: {names}{more}; remove them or set blinding.max_seconds to at most "
                            f"{min(i.seconds for _, i in short):.3f}")
    else:
        lengths = {name: [round(infos[s.path].seconds * b.fps) for s in specs] for name, specs in sets.items()}
        all_lengths = [n for v in lengths.values() for n in v]
        if all_lengths and max(all_lengths) - min(all_lengths) > 1:
            shortest = min(infos[s.path].seconds for s in clips)
            problems.append(f"length: clips last {min(all_lengths) / b.fps:.2f}-{max(all_lengths) / b.fps:.2f} s, "
                            f"so length would give the source away; set blinding.max_seconds to {shortest:.3f} "
                            f"(the shortest clip) so every clip is trimmed to the same length")
            for name in sets:
                fixes[name].append(f"set blinding.max_seconds: {shortest:.3f}")

    # Instructions: shown for every clip or for none.
    if definition.shows_instruction:
        if definition.instruction_source == "per_clip":
            lacking = [s for s in clips if not (s.instruction or "").strip()]
            if lacking:
                refused += [str(s.path) for s in lacking]
                names = ", ".join(s.path.name for s in lacking[:8]) + (f" and {len(lacking) - 8} more"
                                                                        if len(lacking) > 8 else "")
                problems.append(f"instruction: a criterion shows the instruction, but these clips have none: {names}; "
                                f"give every clip an instruction (manifest column or sidecar) or use "
                                f"instruction_source: phase_template (one wording per phase for every clip)")
                for s in lacking:
                    fixes[s.clip_set].append(f"{s.path.name} has no instruction")
        else:
            lacking = [s for s in clips if not s.phase or not phase_wording(s.phase)]
            if lacking:
                refused += [str(s.path) for s in lacking]
                problems.append(f"instruction: these clips have no phase, so no phase wording can be shown: "
                                f"{', '.join(s.path.name for s in lacking[:8])}; give each a phase")

    # Frame rate: motion of a clip below the study fps is not restored by repeating frames.
    effective_fps = {name: min(min(infos[s.path].fps for s in specs), b.fps) for name, specs in sets.items()}
    slow = [n for n, v in effective_fps.items() if v < b.fps - 0.01]
    if slow and len({round(v, 1) for v in effective_fps.values()}) > 1:
        differ("fps", f"clip sets {slow} have fewer frames per second than the study's {b.fps} fps "
                      f"({', '.join(f'{n}: {effective_fps[n]:g}' for n in sets)})",
               slow, f"set blinding.fps to {min(effective_fps.values()):g} (the lowest source frame rate)")

    # Picture size: a clip enlarged to fill the frame looks softer than one scaled down.
    upscale = {name: max(_upscale(screens[s.path].picture_size, b.width, b.height, b.fit) for s in specs)
               for name, specs in sets.items()}
    soft = [n for n, f in upscale.items() if f > UPSCALE_TOLERANCE]
    sources = [(infos[s.path].width, infos[s.path].height) for s in clips]
    least = min((_upscale(size, b.width, b.height, b.fit) for size in sources), default=1.0)
    if least > UPSCALE_TOLERANCE:
        largest = max(sources, key=lambda size: size[0] * size[1])
        problems.append(f"frame: the study frame {b.width}x{b.height} is larger than every clip (each would be "
                        f"enlarged at least {least:.2f}x, the largest is {largest[0]}x{largest[1]}); set "
                        f"blinding width/height to at most {largest[0]}x{largest[1]}")
    elif soft and len(soft) < len(sets):
        smallest = min((screens[s.path].picture_size for s in clips), key=lambda size: size[0] * size[1])
        differ("size", f"clip sets {soft} would be enlarged {max(upscale[n] for n in soft):.2f}x to "
                       f"{b.width}x{b.height}, the others not",
               soft, f"set blinding width/height to at most {smallest[0]}x{smallest[1]}")

    # Aspect ratio: cropped away under fit: crop; under letterbox it becomes bars of different sizes.
    aspects = {name: sorted({round(_aspect(screens[s.path]), 3) for s in specs}) for name, specs in sets.items()}
    all_aspects = sorted({a for v in aspects.values() for a in v})
    if b.fit == "letterbox" and all_aspects and all_aspects[-1] / all_aspects[0] > 1 + ASPECT_TOLERANCE:
        target = b.width / b.height
        barred = [n for n, v in aspects.items() if any(abs(a / target - 1) > ASPECT_TOLERANCE for a in v)]
        differ("aspect", f"under fit: letterbox clips of aspect ratios {all_aspects} get different bars "
                         f"(study frame {b.width}x{b.height})",
               barred or list(sets), "use fit: crop (the default) so every clip fills the frame")

    # Repeats: each is a second reading of a different clip, so there cannot be more than clips.
    if definition.repeats.count > len(clips) and clips:
        problems.append(f"repeats: the study asks for {definition.repeats.count} repeat readings per rater but has "
                        f"{len(clips)} clips; set repeats (count) to at most {len(clips)}")

    rows = []
    shown_frames = b.frames or min((round(infos[s.path].seconds * b.fps) for s in clips), default=0)
    for name in fixes:
        specs = sets.get(name, [])
        ci = [infos[s.path] for s in specs]
        barred = [screens[s.path].borders for s in specs if screens[s.path].borders.any]
        instructions = sum(bool((s.instruction or "").strip()) for s in specs)
        rows.append({
            "clip set": name, "source": "/".join(sorted({s.source for s in specs})), "clips": len(specs),
            "size": _span([f"{i.width}x{i.height}" for i in ci]), "fps": _span([i.fps for i in ci], "{:g}"),
            "seconds": _span([round(i.seconds, 2) for i in ci], "{:g}"), "frames": _span([i.frames for i in ci]),
            "instructions": f"{instructions}/{len(specs)}",
            "borders": (f"{len(barred)} of {len(specs)} clips (e.g. {barred[0].describe()}), cropped away"
                        if barred else "none"),
            "shown as": f"{b.width}x{b.height} {b.fit}, {b.fps} fps, {shown_frames} frames",
            "what to change": "; ".join(dict.fromkeys(fixes[name])) or "nothing",
        })
    return ParityReport(table=pd.DataFrame(rows), problems=problems, waived=waived, refused_clips=refused,
                        screens=screens)


def _aspect(screen: PictureScreen) -> float:
    width, height = screen.picture_size
    return width / height
