"""One call from clip folders to a written report: load extractors, extract features, score, write.

``random_init=True`` builds the real architectures with random weights (no downloads): it exercises the
whole pipeline and measures speed, and the report says loudly that the numbers mean nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ophora.eval.clips import EvalInputError, collect_clips
from ophora.eval.metrics import (COLUMNS, METRICS, VIDEO_METRICS, Extractors, Protocol, extract_features, features_from_npz, features_to_npz,
                                 score_table)
from ophora.eval.report import EvalReport, write_report

log = logging.getLogger(__name__)


@dataclass
class ExtractorOptions:
    metrics: tuple[str, ...] = METRICS
    inception_weights: str | None = None
    i3d_weights: str | None = None
    clip_model: str | None = None  # folder or hub id; None = clip_score.DEFAULT_CLIP_MODEL
    videomae_weights: str | None = None  # cd-fvd's .pth, or a VideoMAEForVideoClassification folder / hub id
    vjepa_model: str | None = None  # folder or hub id; None = vjepa.DEFAULT_VJEPA_MODEL
    offline: bool = False
    random_init: bool = False
    device: str = "cpu"


def check_weights_available(options: ExtractorOptions) -> None:
    """Every extractor's weights at once, before any loads: one message lists each missing file and where it
    goes, instead of one per run."""
    if options.random_init:
        return
    from ophora.eval.weights import MissingWeightsError, weights_problem

    problems = []
    if "fid" in options.metrics:
        from ophora.eval.inception import FID_WEIGHTS_FILENAME, FID_WEIGHTS_URL

        problems.append(weights_problem(options.inception_weights, what="FID Inception-v3",
                                        filename=FID_WEIGHTS_FILENAME, url=FID_WEIGHTS_URL,
                                        flag="--inception-weights", offline=options.offline))
    if "fvd" in options.metrics:
        from ophora.eval.i3d import I3D_FILENAME, I3D_TORCHSCRIPT_URL

        problems.append(weights_problem(options.i3d_weights, what="FVD I3D", filename=I3D_FILENAME,
                                        url=I3D_TORCHSCRIPT_URL, flag="--i3d-weights", offline=options.offline))
    if "cdfvd" in options.metrics:
        from ophora.eval.videomae import videomae_weights_problem

        problems.append(videomae_weights_problem(options.videomae_weights, options.offline))
    if "jedi" in options.metrics:
        from ophora.eval.vjepa import vjepa_weights_problem

        problems.append(vjepa_weights_problem(options.vjepa_model, options.offline))
    if "clipscore" in options.metrics:
        from ophora.eval.clip_score import DEFAULT_CLIP_MODEL, clip_weights_problem

        problems.append(clip_weights_problem(options.clip_model or DEFAULT_CLIP_MODEL, options.offline))
    problems = [p for p in problems if p]
    if len(problems) == 1:
        raise MissingWeightsError(problems[0])
    if problems:
        raise MissingWeightsError(f"{len(problems)} extractor weight files are missing:\n"
                                  + "\n".join(f"  {i}. {p}" for i, p in enumerate(problems, 1)))


def build_extractors(options: ExtractorOptions, protocol: Protocol) -> Extractors:
    """Load every extractor the metrics need, once per run; ``random_init`` keeps a given model folder (a tiny
    random one in tests) and builds the full-size architecture with random weights otherwise."""
    unknown = set(options.metrics) - set(METRICS)
    if unknown or not options.metrics:
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}; got {options.metrics}")
    check_weights_available(options)
    extractors = Extractors()
    if "fid" in options.metrics:
        from ophora.eval.inception import load_fid_inception, random_fid_inception

        model, info = random_fid_inception() if options.random_init else load_fid_inception(
            options.inception_weights, offline=options.offline)
        extractors.fid = model.to(options.device)
        extractors.weights.append(info)
    if "fvd" in options.metrics:
        from ophora.eval.i3d import load_i3d, random_i3d

        model, info = random_i3d() if options.random_init else load_i3d(options.i3d_weights, offline=options.offline)
        extractors.fvd = model.to(options.device)
        extractors.weights.append(info)
    if "cdfvd" in options.metrics:
        from ophora.eval.videomae import load_videomae, random_videomae

        model, info = random_videomae() if options.random_init and options.videomae_weights is None else \
            load_videomae(options.videomae_weights, offline=options.offline)
        extractors.cdfvd = model.to(options.device)
        extractors.weights.append(info)
    if "jedi" in options.metrics:
        from ophora.eval.vjepa import load_vjepa, random_vjepa

        model, info = random_vjepa() if options.random_init and options.vjepa_model is None else \
            load_vjepa(options.vjepa_model, offline=options.offline)
        extractors.jedi = model.to(options.device)
        extractors.weights.append(info)
    if "clipscore" in options.metrics:
        from ophora.eval.clip_score import DEFAULT_CLIP_MODEL, load_clip_scorer

        if options.random_init and options.clip_model is None:
            raise ValueError("random_init has no built-in CLIP: pass clip_model (a folder, e.g. a tiny random "
                             "CLIPModel saved with save_pretrained) or leave clipscore out of the metrics")
        scorer, info = load_clip_scorer(options.clip_model or DEFAULT_CLIP_MODEL, offline=options.offline,
                                        prefix=protocol.clip_prefix, scale=protocol.clip_scale,
                                        device=options.device)
        extractors.clip = scorer
        extractors.weights.append(info)
    return extractors


def evaluate(generated: dict[str, str | Path], real: str | Path | None, out_dir: str | Path | None,
             extractors: Extractors, protocol: Protocol | None = None, per_phase: bool = True,
             device: str = "cpu", progress: Callable[[str, int, int, str], None] | None = None) -> EvalReport:
    """Score each generated set (name -> folder or CSV) against ``real``; write the report to ``out_dir``.

    ``real`` may also be a ``features-real.npz`` from an earlier report: the real set's features are then reused
    (after checking weights and protocol match), which saves most of the time when comparing checkpoints.
    """
    protocol = protocol or Protocol()
    sets = {name: collect_clips(source, f"generated set {name!r}") for name, source in generated.items()}
    real_from_npz = real is not None and Path(real).suffix == ".npz"
    real_records = collect_clips(real, "real set") if real is not None and not real_from_npz else None

    if real is not None:
        _check_enough_clips(sets, real_records or [], extractors, protocol)

    def _progress(label):
        return None if progress is None else (lambda i, n, clip: progress(label, i, n, clip))

    features = {name: extract_features(records, extractors, protocol, f"generated set {name!r}", device=device,
                                       progress=_progress(name)) for name, records in sets.items()}
    real_features = None
    if real_from_npz:
        real_features = features_from_npz(real, extractors, protocol)
        if _video_metrics(extractors) and len(real_features) < 2:
            raise EvalInputError(f"{real} holds {len(real_features)} clip(s); the video metrics need at least 2.")
    elif real_records is not None:
        real_features = extract_features(real_records, extractors.without_clip(), protocol, "real set", need_prompts=False,
                                         device=device, progress=_progress("real"))
    table = score_table(features, real_features, per_phase=per_phase, protocol=protocol, metrics=extractors.metrics)
    warnings = []
    sizes = {name: {f.size for f in feats} for name, feats in features.items()}
    if real_features:
        real_sizes = {f.size for f in real_features}
        for name, gen_sizes in sizes.items():
            if gen_sizes != real_sizes:
                warnings.append(f"Frame sizes differ between {name!r} {sorted(gen_sizes)} and real "
                                f"{sorted(real_sizes)}: both are resized by the protocol, but re-encoding real clips "
                                f"to the generated size makes the comparison cleaner.")
    for name, records in sets.items():
        marked = [r.path.name for r in records if r.marked]
        if marked:
            warnings.append(f"{len(marked)} clip(s) of {name!r} carry a burned-in SYNTHETIC label (e.g. {marked[0]}), "
                            f"which biases FID, FVD and CLIPScore: generate evaluation clips with --no-mark.")
    if any(w.random_init for w in extractors.weights):
        warnings.append("Random-weight extractors: the numbers test the pipeline only.")
    if real is None and extractors.metrics != ("clipscore",):
        warnings.append("No real set given: FID, FVD, CD-FVD and JEDi need one; only CLIPScore is reported.")
    if extractors.jedi is not None:
        warnings.append("JEDi here uses V-JEPA 2 features (transformers), not the paper's V-JEPA 1 ViT-H: compare JEDi "
                        "values only with runs of the same model.")
    report = EvalReport(table=table, protocol=protocol.to_dict(), weights=list(extractors.weights),
                        sets={**{f"generated:{k}": str(v) for k, v in generated.items()},
                              **({"real": str(real)} if real is not None else {})},
                        warnings=warnings)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_report(report, out_dir)
        for name, feats in features.items():
            features_to_npz(feats, out_dir / f"features-{_safe(name)}.npz", extractors.weights, protocol)
        if real_features and not real_from_npz:
            features_to_npz(real_features, out_dir / "features-real.npz", extractors.weights, protocol)
    return report


def features_of(source: str | Path, label: str, extractors: Extractors, protocol: Protocol, device: str = "cpu",
                need_prompts: bool = True, progress: Callable[[str, int, int, str], None] | None = None):
    """A set's features: extracted from a folder or CSV, or read back from an earlier report's ``features-*.npz``
    (refused unless its weights and protocol match this run)."""
    if Path(source).suffix == ".npz":
        return features_from_npz(source, extractors, protocol)
    records = collect_clips(source, label)
    if _video_metrics(extractors) and len(records) < 2:
        _check_enough_clips({}, records, extractors, protocol, label)
    return extract_features(records, extractors, protocol, label, need_prompts=need_prompts, device=device,
                            progress=None if progress is None else lambda i, n, clip: progress(label, i, n, clip))


def _check_enough_clips(sets: dict[str, list], real: list, extractors: Extractors, protocol: Protocol,
                        real_label: str = "real set") -> None:
    """Fail before hours of feature extraction when a covariance cannot be estimated at all."""
    named = [(f"generated set {n!r}", r) for n, r in sets.items()] + ([(real_label, real)] if real else [])
    for label, records in named:
        if _video_metrics(extractors) and len(records) < 2:
            raise EvalInputError(f"The {label} has {len(records)} clip(s); {', '.join(_video_metrics(extractors))} "
                                 f"take one sample per clip and need at least 2 (FVD more than 400 for a non-singular "
                                 f"covariance). Add clips or leave them out with --metrics fid,clipscore.")
        if extractors.fid is not None and len(records) * protocol.fid_frames_per_clip < 2:
            raise EvalInputError(f"The {label} gives {len(records) * protocol.fid_frames_per_clip} frame(s); FID needs "
                                 f"at least 2 for a covariance estimate. Raise --fid-frames-per-clip or add clips.")


def _video_metrics(extractors: Extractors) -> list[str]:
    return [COLUMNS[m] for m in VIDEO_METRICS if extractors.get(m) is not None]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
