"""Extract FID / FVD / CD-FVD / JEDi / CLIPScore features from clip sets and turn them into an overall and
per-phase table, each value with its bootstrap interval and, for the Frechet metrics, its value extrapolated to
infinitely many clips (``ophora.eval.intervals``).

Protocol (defaults; every field is written into the report):
- FID: ``fid_frames_per_clip`` frames per clip, evenly spaced by time; each frame scaled to [0, 1], bilinear
  resized (stretched) to 299x299 and mapped to [-1, 1] as pytorch-fid does; 2048-d pool features. A set's
  frames are pooled into one Gaussian.
- FVD: ``fvd_num_frames`` (16) consecutive frames from ``fvd_start`` (0) with ``fvd_stride`` (1); short side
  bilinear resized to 224 and centre-cropped (common_metrics_on_video_quality; ``fvd_resize="stretch"`` gives
  StyleGAN-V's 224x224 stretch); scaled to [-1, 1]; 400 I3D logits per clip.
- CD-FVD: the same 16-frame window, stretched to 224x224 in [0, 1], VideoMAE-v2 features (``videomae``).
- JEDi: the same 16-frame window, V-JEPA features, 100 x polynomial MMD (``vjepa``, ``mmd``).
- CLIPScore: ``clip_frames_per_clip`` frames evenly spaced, 100 x cosine, mean over frames, set mean clamped at 0.
Video models see ``batch_size`` clips per forward pass; one clip is decoded at a time, so memory stays bounded by
the batch, not the set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ophora.eval.clips import ClipRecord, EvalInputError, check_frame_sizes, evenly_spaced, load_frames
from ophora.eval.frechet import frechet_distance_of_samples
from ophora.eval.intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES, bootstrap, extrapolate_to_infinity
from ophora.eval.mmd import KernelMMD
from ophora.eval.weights import WeightsInfo

METRICS = ("fid", "fvd", "cdfvd", "jedi", "clipscore")
COLUMNS = {"fid": "FID", "fvd": "FVD", "cdfvd": "CD-FVD", "jedi": "JEDi", "clipscore": "CLIPScore"}
VIDEO_METRICS = ("fvd", "cdfvd", "jedi")  # one feature vector per clip from the 16-frame window
FRECHET_METRICS = ("fid", "fvd", "cdfvd")
HIGHER_IS_BETTER = ("clipscore",)
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
    bootstrap_resamples: int = DEFAULT_RESAMPLES
    confidence: float = DEFAULT_LEVEL
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        if self.fvd_resize not in FVD_RESIZES:
            raise ValueError(f"fvd_resize must be one of {FVD_RESIZES}; got {self.fvd_resize!r}")
        for name in ("fid_frames_per_clip", "fvd_num_frames", "fvd_stride", "clip_frames_per_clip", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.bootstrap_resamples != 0 and self.bootstrap_resamples < 20:
            raise ValueError("bootstrap_resamples must be 0 (no intervals) or at least 20")
        if not 0.5 <= self.confidence < 1:
            raise ValueError("confidence must be between 0.5 and 1 (e.g. 0.95)")

    def to_dict(self) -> dict:
        return asdict(self) | {
            "fid_resize": "bilinear stretch to 299x299 (pytorch-fid)",
            "cdfvd": "FVD window, bilinear stretch to 224x224, [0, 1], VideoMAE-v2 fc_norm(mean tokens) (cd-fvd)",
            "jedi": "FVD window, V-JEPA SSv2-probe pooler, 100 x MMD with (x.y / d)^2 kernel (videojedi)",
            "clipscore": f"{self.clip_scale:g} x cos, mean over frames and clips, clamped at 0",
            "intervals": f"{self.confidence:.0%} basic bootstrap over clips, {self.bootstrap_resamples} resamples, "
                         f"each set resampled independently (seed {self.bootstrap_seed})",
            "sample_size_correction": "Frechet metrics fitted against 1/N over subsets of 50-100% of the clips and "
                                      "extrapolated to N = infinity (Chong & Forsyth 2020)"}


@dataclass
class Extractors:
    """The networks in use and what their weights are; any of them may be ``None`` to skip that metric."""

    fid: object | None = None  # FIDInceptionV3: (N, 3, H, W) in [0, 1] -> (N, 2048)
    fvd: object | None = None  # I3D: (N, 3, T, 224, 224) in [-1, 1] -> (N, 400)
    cdfvd: object | None = None  # videomae.VideoMAEFeatures: .preprocess(frames), (N, 3, T, S, S) -> (N, 1408)
    jedi: object | None = None  # vjepa.VJEPAFeatures: .preprocess(frames), (N, 3, T, S, S) -> (N, hidden)
    clip: object | None = None  # ClipScorer
    weights: list[WeightsInfo] = field(default_factory=list)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m in METRICS if self.get(m) is not None)

    def get(self, metric: str):
        return self.clip if metric == "clipscore" else getattr(self, metric)

    def without_clip(self) -> "Extractors":
        """The same networks minus CLIPScore, for real clips (they have no instruction to score)."""
        return Extractors(fid=self.fid, fvd=self.fvd, cdfvd=self.cdfvd, jedi=self.jedi, weights=self.weights)


@dataclass
class ClipFeatures:
    record: ClipRecord
    size: tuple[int, int]  # width, height
    num_frames: int
    fid: np.ndarray | None = None  # (K, 2048)
    fvd: np.ndarray | None = None  # (400,)
    clip_score: float | None = None
    cdfvd: np.ndarray | None = None  # (1408,)
    jedi: np.ndarray | None = None  # (hidden,)


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
            f"--fvd-stride, or leave the video metrics out with --metrics fid,clipscore.")
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


def _video_input(metric: str, window: np.ndarray, extractors: Extractors, protocol: Protocol):
    """One clip's model input for a video metric, (3, T, S, S) as that model's reference prepares it."""
    if metric == "fvd":
        return _fvd_tensor(window, protocol)
    return extractors.get(metric).preprocess(window)


def extract_features(records: list[ClipRecord], extractors: Extractors, protocol: Protocol, label: str,
                     need_prompts: bool = True, device: str = "cpu",
                     progress: Callable[[int, int, str], None] | None = None) -> list[ClipFeatures]:
    """Decode each clip once and run every extractor on it: FID batched over frames, the video models over
    ``batch_size`` clips at a time (only that many preprocessed windows are held)."""
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
    video_metrics = [m for m in VIDEO_METRICS if extractors.get(m) is not None]
    results: list[ClipFeatures] = []
    pending: dict[str, list] = {m: [] for m in video_metrics}
    waiting: list[ClipFeatures] = []

    def flush() -> None:
        with torch.inference_mode():  # no-op loop without video metrics
            for metric in video_metrics:
                batch = torch.stack(pending[metric]).to(device)
                feats = extractors.get(metric)(batch).double().cpu().numpy()
                for item, feat in zip(waiting, feats):
                    setattr(item, metric, feat)
                pending[metric].clear()
        results.extend(waiting)
        waiting.clear()

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
        if video_metrics:
            window = _fvd_frames(frames, record, protocol)
            for metric in video_metrics:
                pending[metric].append(_video_input(metric, window, extractors, protocol))
        if extractors.clip is not None and record.prompt:
            item.clip_score = extractors.clip.score(frames[evenly_spaced(len(frames), protocol.clip_frames_per_clip)],
                                                    record.prompt)
        del frames
        waiting.append(item)
        if len(waiting) >= (protocol.batch_size if video_metrics else 1):
            flush()
        if progress is not None:
            progress(index + 1, len(records), record.path.name)
    if waiting:
        flush()
    return results


def metric_statistic(metric: str, gen: list[ClipFeatures], real: list[ClipFeatures] | None):
    """``statistic(i_gen, i_real)`` of ``metric`` on clip indices (CLIPScore ignores ``i_real``), or ``None`` when
    the sets lack the features. Resampling indices resamples clips, with all of a clip's frames (FID)."""
    if metric == "clipscore":
        scores = np.array([np.nan if c.clip_score is None else c.clip_score for c in gen])
        if np.isnan(scores).all():
            return None
        return lambda i, j=None: max(float(np.nanmean(scores[i])), 0.0)
    if not real or getattr(gen[0], metric) is None or getattr(real[0], metric) is None:
        return None
    if metric == "fid":
        gen_frames, real_frames = [c.fid for c in gen], [c.fid for c in real]
        return lambda i, j: frechet_distance_of_samples(np.concatenate([gen_frames[k] for k in i]),
                                                        np.concatenate([real_frames[k] for k in j]))
    gen_feats = np.stack([getattr(c, metric) for c in gen])
    real_feats = np.stack([getattr(c, metric) for c in real])
    if metric == "jedi":
        return KernelMMD(gen_feats, real_feats).value
    return lambda i, j: frechet_distance_of_samples(gen_feats[i], real_feats[j])


def _sample_note(metric: str, gen: list[ClipFeatures], real: list[ClipFeatures]) -> str | None:
    """Why a Frechet value is missing ("too few samples") or biased (singular covariance), else ``None``."""
    if metric not in FRECHET_METRICS:
        return None
    counts = [sum(len(getattr(c, metric)) for c in s) if metric == "fid" else len(s) for s in (gen, real)]
    dims = gen[0].fid.shape[1] if metric == "fid" else len(getattr(gen[0], metric))
    if min(counts) < 2:
        return f"{COLUMNS[metric]}: too few samples for a covariance ({counts[0]} generated, {counts[1]} real; need 2+)"
    if min(counts) <= dims:
        return (f"{COLUMNS[metric]}: {min(counts)} samples <= {dims} dims, singular covariance (biased; compare the "
                f"N=inf value or equal counts)")
    return None


def _group_row(model: str, group: str, gen: list[ClipFeatures], real: list[ClipFeatures] | None,
               protocol: Protocol, metrics: tuple[str, ...]) -> dict:
    notes: list[str] = []
    row = {"model": model, "group": group, "generated_clips": len(gen), "real_clips": len(real or [])}
    for metric in metrics:
        column = COLUMNS[metric]
        row.update({column: float("nan"), f"{column}_low": float("nan"), f"{column}_high": float("nan")})
        if metric in FRECHET_METRICS:
            row[f"{column}_inf"] = float("nan")
        statistic = metric_statistic(metric, gen, real)
        if statistic is None:
            if metric != "clipscore" and not real and getattr(gen[0], metric) is not None:
                notes.append(f"{column}: no real clips in this group")
            continue
        note = _sample_note(metric, gen, real)
        if note:
            notes.append(note)
            if "too few samples" in note:
                continue
        sizes = [len(gen), len(real or [None])]
        row[column] = float(statistic(np.arange(sizes[0]), np.arange(sizes[1])))
        resampled = sizes[:1] if metric == "clipscore" else sizes  # CLIPScore needs no real clips
        if protocol.bootstrap_resamples and min(resampled) >= 2:
            interval = bootstrap(statistic, sizes, protocol.bootstrap_resamples, protocol.confidence,
                                 protocol.bootstrap_seed)
            row[f"{column}_low"], row[f"{column}_high"] = interval.low, interval.high
        if metric in FRECHET_METRICS and min(sizes) >= 4:
            row[f"{column}_inf"] = extrapolate_to_infinity(statistic, sizes, seed=protocol.bootstrap_seed).value_at_infinity
    row["notes"] = "; ".join(notes)
    return row


def _phase_order(phases: set[str]) -> list[str]:
    from ophora.vocabulary import load_phases

    known = [p.id for p in load_phases()]
    return [p for p in known if p in phases] + sorted(phases - set(known))


def phase_groups(*sets: list[ClipFeatures] | None) -> list[tuple[str, list[list[ClipFeatures] | None]]]:
    """("all", sets) then one (phase, subsets) per phase of the first set, in surgical order; phases are matched
    between sets by phase id, and unlabelled clips count only in "all"."""
    groups = [("all", list(sets))]
    for phase in _phase_order({c.record.phase for c in sets[0] if c.record.phase}):
        groups.append((phase, [None if s is None else [c for c in s if c.record.phase == phase] for s in sets]))
    return groups


def table_columns(metrics: tuple[str, ...]) -> list[str]:
    columns = ["model", "group", "generated_clips", "real_clips"]
    for metric in metrics:
        column = COLUMNS[metric]
        columns += [column, f"{column}_low", f"{column}_high"] + ([f"{column}_inf"] if metric in FRECHET_METRICS else [])
    return columns + ["notes"]


def score_table(generated: dict[str, list[ClipFeatures]], real: list[ClipFeatures] | None,
                per_phase: bool = True, protocol: Protocol | None = None, metrics: tuple[str, ...] = METRICS):
    """One row per (model, group): group "all", then each phase present in the generated set, in surgical order."""
    import pandas as pd

    protocol = protocol or Protocol()
    rows = []
    for model, gen in generated.items():
        if not gen:
            raise EvalInputError(f"The generated set {model!r} is empty.")
        groups = phase_groups(gen, real)
        for group, (in_gen, in_real) in groups if per_phase else groups[:1]:
            rows.append(_group_row(model, group, in_gen, in_real, protocol, metrics))
    return pd.DataFrame(rows, columns=table_columns(METRICS))  # every column always: stable CSV for readers


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
    for metric in VIDEO_METRICS:
        if features and getattr(features[0], metric) is not None:
            arrays[metric] = np.stack([getattr(c, metric) for c in features]).astype(np.float32)
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
        video = {m: data[m][i].astype(np.float64) for m in VIDEO_METRICS
                 if m in data.files and extractors.get(m) is not None}
        features.append(ClipFeatures(record, tuple(int(v) for v in data["sizes"][i]), int(data["num_frames"][i]),
                                     fid=fid[i] if fid is not None and extractors.fid is not None else None,
                                     clip_score=None if np.isnan(score) else score, **video))
    return features
