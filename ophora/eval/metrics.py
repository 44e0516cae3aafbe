"""Extract FID / FVD / CLIPScore features from clip sets and turn them into an overall and per-phase table.

Protocol (defaults; every field is written into the report):
- FID: ``fid_frames_per_clip`` frames per clip, evenly spaced by time; each frame scaled to [0, 1], bilinear
  resized (stretched) to 299x299 and mapped to [-1, 1] as pytorch-fid does; 2048-d pool features. A set's
  frames are pooled into one Gaussian.
- FVD: ``fvd_num_frames`` (16) consecutive frames from ``fvd_start`` (0) with ``fvd_stride`` (1); short side
  bilinear resized to 224 and centre-cropped (common_metrics_on_video_quality; ``fvd_resize="stretch"`` gives
  StyleGAN-V's 224x224 stretch); scaled to [-1, 1]; 400 I3D logits per clip.
- CLIPScore: ``clip_frames_per_clip`` frames evenly spaced, 100 x cosine, mean over frames, set mean clamped at 0.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ophora.eval.clips import ClipRecord, EvalInputError, check_frame_sizes, evenly_spaced, load_frames
from ophora.eval.frechet import GaussianStats, SingularCovarianceWarning, frechet_distance_between
from ophora.eval.weights import WeightsInfo

METRICS = ("fid", "fvd", "clipscore")
FVD_RESIZES = ("center-crop", "stretch")


@dataclass
class Protocol:
    fid_frames_per_clip: int = 16
    fvd_num_frames: int = 16
    fvd_start: int = 0
    fvd_stride: int = 1
    fvd_size: int = 224
    fvd_resize: str = "center-crop"
    clip_frames_per_clip: int = 8
    clip_prefix: str = ""
    clip_scale: float = 100.0
    batch_size: int = 8
    allow_mixed_sizes: bool = False

    def __post_init__(self) -> None:
        if self.fvd_resize not in FVD_RESIZES:
            raise ValueError(f"fvd_resize must be one of {FVD_RESIZES}; got {self.fvd_resize!r}")
        for name in ("fid_frames_per_clip", "fvd_num_frames", "fvd_stride", "clip_frames_per_clip", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self) | {"fid_resize": "bilinear stretch to 299x299 (pytorch-fid)",
                               "clipscore": f"{self.clip_scale:g} x cos, mean over frames and clips, clamped at 0"}


@dataclass
class Extractors:
    """The networks in use and what their weights are; any of them may be ``None`` to skip that metric."""

    fid: object | None = None  # FIDInceptionV3: (N, 3, H, W) in [0, 1] -> (N, 2048)
    fvd: object | None = None  # I3D: (N, 3, T, 224, 224) in [-1, 1] -> (N, 400)
    clip: object | None = None  # ClipScorer
    weights: list[WeightsInfo] = field(default_factory=list)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m, e in zip(METRICS, (self.fid, self.fvd, self.clip)) if e is not None)


@dataclass
class ClipFeatures:
    record: ClipRecord
    size: tuple[int, int]  # width, height
    num_frames: int
    fid: np.ndarray | None = None  # (K, 2048)
    fvd: np.ndarray | None = None  # (400,)
    clip_score: float | None = None


def _fvd_tensor(frames: np.ndarray, protocol: Protocol):
    import torch
    import torch.nn.functional as F

    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # T, C, H, W
    size = protocol.fvd_size
    if protocol.fvd_resize == "stretch":
        video = F.interpolate(video, size=(size, size), mode="bilinear", align_corners=False)
    else:
        h, w = video.shape[-2:]
        scale = size / min(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
        video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
        top, left = (target[0] - size) // 2, (target[1] - size) // 2
        video = video[:, :, top:top + size, left:left + size]
    return (video * 2 - 1).permute(1, 0, 2, 3)  # C, T, H, W


def _fvd_frames(frames: np.ndarray, record: ClipRecord, protocol: Protocol) -> np.ndarray:
    needed = protocol.fvd_start + (protocol.fvd_num_frames - 1) * protocol.fvd_stride + 1
    if len(frames) < needed:
        raise EvalInputError(
            f"{record.path.name} has {len(frames)} frames; FVD with {protocol.fvd_num_frames} frames from frame "
            f"{protocol.fvd_start} at stride {protocol.fvd_stride} needs {needed}. Use longer clips, a smaller "
            f"--fvd-stride, or leave FVD out with --metrics fid,clipscore.")
    return frames[protocol.fvd_start:needed:protocol.fvd_stride]


def probe_size(path: Path) -> tuple[int, int]:
    """Frame size without decoding the clip."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        return tuple(reader.__next__()["size"])
    except Exception as error:  # noqa: BLE001
        raise EvalInputError(f"Cannot read {path}: {error}") from error
    finally:
        reader.close()


def extract_features(records: list[ClipRecord], extractors: Extractors, protocol: Protocol, label: str,
                     need_prompts: bool = True, device: str = "cpu",
                     progress: Callable[[int, int, str], None] | None = None) -> list[ClipFeatures]:
    """Decode each clip once and run every extractor on it (batched over frames for FID)."""
    import torch

    if not records:
        raise EvalInputError(f"The {label} is empty.")
    sizes = {r.path: probe_size(r.path) for r in records}
    if not protocol.allow_mixed_sizes:
        check_frame_sizes(sizes, label)
    if extractors.clip is not None and need_prompts:
        missing = [r.path.name for r in records if not r.prompt]
        if missing:
            raise EvalInputError(f"CLIPScore needs each clip's instruction, but {len(missing)} clip(s) of the {label} "
                                 f"have none (e.g. {missing[:3]}): keep the generator's .json sidecars, give a "
                                 f"manifest CSV with a prompt column, or leave CLIPScore out with --metrics fid,fvd.")
    results = []
    for index, record in enumerate(records):
        frames = load_frames(record)
        item = ClipFeatures(record, sizes[record.path], len(frames))
        with torch.inference_mode():
            if extractors.fid is not None:
                chosen = frames[evenly_spaced(len(frames), protocol.fid_frames_per_clip)]
                feats = []
                for start in range(0, len(chosen), protocol.batch_size):
                    batch = torch.from_numpy(chosen[start:start + protocol.batch_size]).permute(0, 3, 1, 2)
                    feats.append(extractors.fid(batch.to(device).float() / 255.0).double().cpu().numpy())
                item.fid = np.concatenate(feats)
            if extractors.fvd is not None:
                video = _fvd_tensor(_fvd_frames(frames, record, protocol), protocol).unsqueeze(0).to(device)
                item.fvd = extractors.fvd(video).double().cpu().numpy()[0]
        if extractors.clip is not None and record.prompt:
            item.clip_score = extractors.clip.score(frames[evenly_spaced(len(frames), protocol.clip_frames_per_clip)],
                                                    record.prompt)
        results.append(item)
        if progress is not None:
            progress(index + 1, len(records), record.path.name)
    return results


def _frechet(gen: list[np.ndarray], real: list[np.ndarray], what: str, notes: list[str]) -> float:
    gen_feats, real_feats = np.concatenate(gen), np.concatenate(real)
    if len(gen_feats) < 2 or len(real_feats) < 2:
        notes.append(f"{what}: too few samples for a covariance ({len(gen_feats)} generated, {len(real_feats)} "
                     f"real; need 2+)")
        return float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SingularCovarianceWarning)
        value = frechet_distance_between(GaussianStats.from_features(gen_feats, f"generated {what}"),
                                         GaussianStats.from_features(real_feats, f"real {what}"))
    if any(issubclass(w.category, SingularCovarianceWarning) for w in caught):
        notes.append(f"{what}: {min(len(gen_feats), len(real_feats))} samples <= {gen_feats.shape[1]} dims, "
                     f"singular covariance (biased, compare only at equal counts)")
    return value


def _group_row(model: str, group: str, gen: list[ClipFeatures], real: list[ClipFeatures] | None) -> dict:
    notes: list[str] = []
    row = {"model": model, "group": group, "generated_clips": len(gen), "real_clips": len(real or []),
           "FID": float("nan"), "FVD": float("nan"), "CLIPScore": float("nan")}
    if real:
        if gen[0].fid is not None and real[0].fid is not None:
            row["FID"] = _frechet([c.fid for c in gen], [c.fid for c in real], "FID", notes)
        if gen[0].fvd is not None and real[0].fvd is not None:
            row["FVD"] = _frechet([c.fvd[None] for c in gen], [c.fvd[None] for c in real], "FVD", notes)
    elif gen[0].fid is not None or gen[0].fvd is not None:
        notes.append("no real clips in this group")
    scores = [c.clip_score for c in gen if c.clip_score is not None]
    if scores:
        row["CLIPScore"] = max(float(np.mean(scores)), 0.0)
    row["notes"] = "; ".join(notes)
    return row


def _phase_order(phases: set[str]) -> list[str]:
    from ophora.vocabulary import load_phases

    known = [p.id for p in load_phases()]
    return [p for p in known if p in phases] + sorted(phases - set(known))


def score_table(generated: dict[str, list[ClipFeatures]], real: list[ClipFeatures] | None,
                per_phase: bool = True):
    """One row per (model, group): group "all", then each phase present in the generated set, in surgical order.

    Phases are matched between sets by phase id; unlabelled clips count only in "all".
    """
    import pandas as pd

    rows = []
    for model, gen in generated.items():
        if not gen:
            raise EvalInputError(f"The generated set {model!r} is empty.")
        rows.append(_group_row(model, "all", gen, real))
        if per_phase:
            for phase in _phase_order({c.record.phase for c in gen if c.record.phase}):
                in_gen = [c for c in gen if c.record.phase == phase]
                in_real = [c for c in real if c.record.phase == phase] if real else None
                rows.append(_group_row(model, phase, in_gen, in_real))
    return pd.DataFrame(rows, columns=["model", "group", "generated_clips", "real_clips", "FID", "FVD", "CLIPScore",
                                       "notes"])


PROTOCOL_KEYS_FOR_REUSE = ("fid_frames_per_clip", "fvd_num_frames", "fvd_start", "fvd_stride", "fvd_size",
                           "fvd_resize")


def features_to_npz(features: list[ClipFeatures], path: str | Path, weights: list[WeightsInfo],
                    protocol: Protocol) -> Path:
    """Keep extracted features, with the weights and protocol that made them, for re-use as a real set."""
    import json

    path = Path(path)
    meta = {"weights": [w.to_dict() for w in weights], "protocol": protocol.to_dict()}
    arrays = {"paths": np.array([str(c.record.path) for c in features]),
              "phases": np.array([c.record.phase or "" for c in features]),
              "prompts": np.array([c.record.prompt or "" for c in features]),
              "sizes": np.array([c.size for c in features]), "num_frames": np.array([c.num_frames for c in features]),
              "clip_scores": np.array([np.nan if c.clip_score is None else c.clip_score for c in features]),
              "meta": np.array(json.dumps(meta))}
    if features and features[0].fid is not None:
        arrays["fid_counts"] = np.array([len(c.fid) for c in features])
        arrays["fid"] = np.concatenate([c.fid for c in features]).astype(np.float32)
    if features and features[0].fvd is not None:
        arrays["fvd"] = np.stack([c.fvd for c in features]).astype(np.float32)
    np.savez_compressed(path, **arrays)
    return path


def features_from_npz(path: str | Path, extractors: Extractors, protocol: Protocol) -> list[ClipFeatures]:
    """Load a saved feature set, refusing it unless weights (sha256) and protocol match the current run."""
    import json

    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"Feature file {path} does not exist.")
    data = np.load(path, allow_pickle=False)
    meta = json.loads(str(data["meta"]))
    saved = {w["role"]: w for w in meta["weights"]}
    for current in extractors.weights:
        if current.role == "clipscore":
            continue
        old = saved.get(current.role)
        if old is None or (old["sha256"], old["random_init"]) != (current.sha256, current.random_init):
            raise EvalInputError(f"{path} was not extracted with the current {current.role.upper()} weights "
                                 f"({current.name}, sha256 {current.sha256}); extract the real set again.")
        if f"{current.role}" not in data.files:
            raise EvalInputError(f"{path} holds no {current.role.upper()} features; extract the real set again.")
    wanted = protocol.to_dict()
    changed = [k for k in PROTOCOL_KEYS_FOR_REUSE if meta["protocol"].get(k) != wanted[k]]
    if changed:
        raise EvalInputError(f"{path} was extracted with a different protocol ({', '.join(changed)}); extract the "
                             f"real set again or use the same settings.")
    fid = np.split(data["fid"].astype(np.float64), np.cumsum(data["fid_counts"])[:-1]) if "fid" in data.files else None
    features = []
    for i, clip_path in enumerate(data["paths"]):
        record = ClipRecord(Path(str(clip_path)), str(data["prompts"][i]) or None, str(data["phases"][i]) or None)
        score = float(data["clip_scores"][i])
        features.append(ClipFeatures(record, tuple(int(v) for v in data["sizes"][i]), int(data["num_frames"][i]),
                                     fid=fid[i] if fid is not None and extractors.fid is not None else None,
                                     fvd=data["fvd"][i].astype(np.float64)
                                     if "fvd" in data.files and extractors.fvd is not None else None,
                                     clip_score=None if np.isnan(score) else score))
    return features
