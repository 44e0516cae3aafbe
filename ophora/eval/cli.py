"""`python -m ophora eval`: FID, FVD, CD-FVD, JEDi and CLIPScore of generated against real clips with bootstrap
intervals; model-vs-model comparison; the paper's Table 1 protocol; downstream dataset export.

Examples:
  python -m ophora eval metrics --generated outputs/ophora --real data/real_clips --out reports/ophora
  python -m ophora eval compare ophora=outputs/ophora base=outputs/cogvideox --real data/real_clips --out rep/cmp
  python -m ophora eval paper-protocol --real data/real_clips --out runs/table1 --clips-per-prompt 10
  python -m ophora eval metrics --generated ophora=outputs/a --generated tpt=outputs/b --real real.csv --out rep/
  python -m ophora eval metrics --generated outputs/ophora --metrics clipscore --out rep/   (no real set needed)
  python -m ophora eval export --generated outputs/ophora --out datasets/ophora-phases --val-fraction 0.1
  python -m ophora eval train-classifier --dataset datasets/ophora-phases --epochs 5
Weights: --inception-weights pt_inception-2015-12-05-6726825d.pth, --i3d-weights i3d_torchscript.pt,
--videomae-weights vit_g_hybrid_pt_1200e_ssv2_ft.pth, --vjepa-model and --clip-model <folder or hub id>; without them they are downloaded to ~/.cache/ophora/eval when the network allows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _named_set(value: str) -> tuple[str, str]:
    if "=" in value and not Path(value).exists():
        name, path = value.split("=", 1)
        return name.strip(), path.strip()
    return Path(value).name or value, value


def _add_metrics_parser(sub) -> None:
    from ophora.eval.metrics import METRICS

    p = sub.add_parser("metrics", help="FID / FVD / CD-FVD / JEDi / CLIPScore table with intervals, overall and per phase",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--generated", action="append", required=True, metavar="[NAME=]PATH",
                   help="generated clips: folder (with .json sidecars) or manifest CSV; repeat to compare models")
    p.add_argument("--real", help="real clips: folder (phase from sidecar or subfolder name), CSV path,phase, or "
                                  "a features-real.npz from an earlier report (reused if weights and protocol match)")
    p.add_argument("--out", required=True, help="report folder (metrics.csv/.md/.html, report.json, features)")
    _add_metric_arguments(p, METRICS, "overall row only")


def _add_metric_arguments(p, metrics, overall_help: str) -> None:
    """Which metrics, per phase or not, and the extractors and protocol they run with (report and compare)."""
    p.add_argument("--metrics", default=",".join(metrics), help="comma-separated subset of " + ",".join(metrics))
    p.add_argument("--no-per-phase", action="store_true", help=overall_help)
    _add_extractor_arguments(p)
    _add_protocol_arguments(p)


def _add_extractor_arguments(p) -> None:
    weights = p.add_argument_group("extractor weights")
    weights.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    weights.add_argument("--i3d-weights", help="StyleGAN-V's i3d_torchscript.pt or an InceptionI3d state dict")
    weights.add_argument("--clip-model", help="CLIP folder or hub id (default openai/clip-vit-large-patch14)")
    weights.add_argument("--videomae-weights", help="CD-FVD: cd-fvd's vit_g_hybrid_pt_1200e_ssv2_ft.pth, or a "
                                                    "VideoMAEForVideoClassification folder or hub id")
    weights.add_argument("--vjepa-model", help="JEDi: V-JEPA 2 video classifier folder or hub id "
                                               "(default facebook/vjepa2-vitl-fpc16-256-ssv2)")
    weights.add_argument("--offline", action="store_true", help="never download weights")
    weights.add_argument("--random-init", action="store_true",
                         help="random-weight extractors (pipeline check / speed only; numbers are meaningless)")


def _add_protocol_arguments(p, with_seed: bool = True) -> None:
    from ophora.eval.intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES
    from ophora.eval.metrics import FVD_RESIZES

    proto = p.add_argument_group("protocol")
    proto.add_argument("--fid-frames-per-clip", type=int, default=16)
    proto.add_argument("--fvd-num-frames", type=int, default=16)
    proto.add_argument("--fvd-start", type=int, default=0)
    proto.add_argument("--fvd-stride", type=int, default=1)
    proto.add_argument("--fvd-resize", choices=FVD_RESIZES, default="center-crop")
    proto.add_argument("--clip-frames-per-clip", type=int, default=8)
    proto.add_argument("--clip-prefix", default="", help='e.g. "A photo depicts" for Hessel et al.\'s variant')
    proto.add_argument("--batch-size", type=int, default=8)
    proto.add_argument("--allow-mixed-sizes", action="store_true")
    proto.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES,
                       help="bootstrap resamples over clips for the intervals (0: no intervals)")
    proto.add_argument("--confidence", type=float, default=DEFAULT_LEVEL, help="interval level")
    if with_seed:  # paper-protocol's --seed is the generation seed; its bootstrap seed is 0
        proto.add_argument("--seed", type=int, default=0, help="bootstrap seed")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def protocol_from_args(args):
    from ophora.eval.metrics import Protocol

    return Protocol(fid_frames_per_clip=args.fid_frames_per_clip, fvd_num_frames=args.fvd_num_frames,
                    fvd_start=args.fvd_start, fvd_stride=args.fvd_stride, fvd_resize=args.fvd_resize,
                    clip_frames_per_clip=args.clip_frames_per_clip, clip_prefix=args.clip_prefix,
                    batch_size=args.batch_size, allow_mixed_sizes=args.allow_mixed_sizes,
                    bootstrap_resamples=args.bootstrap, confidence=args.confidence,
                    bootstrap_seed=0 if hasattr(args, "clips_per_prompt") else args.seed)


def extractors_from_args(args, metrics: tuple[str, ...], protocol):
    """Every extractor the metrics need, loaded once for the whole run."""
    from ophora.eval.evaluate import ExtractorOptions, build_extractors

    return build_extractors(ExtractorOptions(metrics=metrics, inception_weights=args.inception_weights,
                                             i3d_weights=args.i3d_weights, clip_model=args.clip_model,
                                             videomae_weights=args.videomae_weights, vjepa_model=args.vjepa_model,
                                             offline=args.offline, random_init=args.random_init,
                                             device=_device(args.device)), protocol)


def parse_metrics(value: str) -> tuple[str, ...]:
    """The ``--metrics`` list, checked before anything is generated or extracted."""
    from ophora.eval.metrics import METRICS

    metrics = tuple(m.strip().lower().replace("-", "") for m in value.split(",") if m.strip())
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"--metrics: unknown {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(METRICS)}")
    return metrics


def _add_compare_parser(sub) -> None:
    from ophora.eval.metrics import METRICS

    p = sub.add_parser("compare", help="model A vs model B on the same real clips: paired bootstrap of A - B per "
                                       "metric and phase, said in words (compare.html, compare.json)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("a", metavar="[NAME=]A", help="model A's clips (folder or CSV) or its features-*.npz")
    p.add_argument("b", metavar="[NAME=]B", help="model B's clips (folder or CSV) or its features-*.npz")
    p.add_argument("--real", required=True, help="real clips (folder or CSV) or a features-real.npz")
    p.add_argument("--out", required=True, help="report folder (compare.html, compare.md, compare.json)")
    _add_metric_arguments(p, METRICS, "overall only")


def _add_paper_protocol_parser(sub) -> None:
    from ophora.eval.paper_protocol import DEFAULT_PROMPTS, PAPER_SEED
    from ophora.eval.metrics import METRICS
    from ophora.generation.cli import add_model_arguments

    p = sub.add_parser("paper-protocol", help="the paper's Table 1 as one command: generate from the Cataract-1K "
                                              "phase prompts with fixed seeds, score against real clips, print "
                                              "the paper's table beside ours",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--real", required=True, help="real clips (folder or CSV) or a features-real.npz")
    p.add_argument("--out", required=True, help="folder for the generated clips (clips/) and the report (report/)")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="prompt CSV in the original sampler's format")
    p.add_argument("--clips-per-prompt", type=int, default=10, help="seeds SEED, SEED+1, ... for each prompt")
    p.add_argument("--seed", type=int, default=PAPER_SEED, help="first seed (the paper's validation seed)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=6.0)
    p.add_argument("--frames", type=int, help="8N+1 (default: the model's native 49)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--name", default="ours", help="the model's name in the table")
    p.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of " + ",".join(METRICS))
    _add_extractor_arguments(p)
    _add_protocol_arguments(p, with_seed=False)
    add_model_arguments(p)


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write generated clips as a video-classification dataset (train/val lists)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--generated", required=True, action="append", help="folder or manifest CSV; may repeat")
    p.add_argument("--out", required=True, help="dataset folder to create or extend")
    p.add_argument("--class-index", help="existing class index (one name per line, or 'index name') to align "
                                         "labels with, e.g. OphNet's phase list")
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link", action="store_true", help="symlink clips instead of copying them")
    p.add_argument("--allow-new-classes", action="store_true",
                   help="append phases missing from --class-index instead of failing")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train-classifier", help="reference video classifier (tiny VideoMAE) reporting top-1/top-5",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, help="folder written by `eval export` (train.txt, val.txt, classes)")
    p.add_argument("--model", help="VideoMAE folder or hub id to fine-tune (default: a small random-init VideoMAE)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--num-frames", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="where to save the trained model and metrics.json")
    p.add_argument("--device", default=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ophora eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    _add_metrics_parser(sub)
    _add_compare_parser(sub)
    _add_paper_protocol_parser(sub)
    _add_export_parser(sub)
    _add_train_parser(sub)
    return parser


def _device(value: str | None) -> str:
    import torch

    return value or ("cuda" if torch.cuda.is_available() else "cpu")


def progress_to_stderr(label: str, index: int, total: int, clip: str) -> None:
    print(f"[{label}] {index}/{total} {clip}", file=sys.stderr)


def _run_metrics(args) -> int:
    from ophora.eval.evaluate import evaluate
    from ophora.eval.report import to_markdown

    generated = dict(_named_set(v) for v in args.generated)
    if len(generated) != len(args.generated):
        raise ValueError("two --generated sets have the same name; name them with NAME=PATH")
    metrics = parse_metrics(args.metrics)
    if args.real is None and set(metrics) - {"clipscore"}:
        raise ValueError("FID, FVD, CD-FVD and JEDi compare with real clips: pass --real, or --metrics clipscore")
    protocol = protocol_from_args(args)
    extractors = extractors_from_args(args, metrics, protocol)
    report = evaluate(generated, args.real, args.out, extractors, protocol, per_phase=not args.no_per_phase,
                      device=_device(args.device), progress=progress_to_stderr)
    print(to_markdown(report, with_paper=False))
    print(f"Report written to {args.out} (metrics.csv, metrics.md, metrics.html, report.json)")
    return 0


def _run_compare(args) -> int:
    from ophora.eval.compare import Comparison, compare_features, to_markdown, write_comparison
    from ophora.eval.evaluate import features_of

    (name_a, a), (name_b, b) = _named_set(args.a), _named_set(args.b)
    if name_a == name_b:
        name_a, name_b = f"A ({name_a})", f"B ({name_b})"
    metrics = parse_metrics(args.metrics)
    protocol = protocol_from_args(args)
    extractors = extractors_from_args(args, metrics, protocol)  # loaded once for the three sets
    device = _device(args.device)
    # The real set first: a wrong --real is said before both models' clips are read.
    real = features_of(args.real, "real set", extractors.without_clip(), protocol, device, need_prompts=False,
                       progress=progress_to_stderr)
    feats_a = features_of(a, f"set {name_a!r}", extractors, protocol, device, progress=progress_to_stderr)
    feats_b = features_of(b, f"set {name_b!r}", extractors, protocol, device, progress=progress_to_stderr)
    rows, paired = compare_features(feats_a, feats_b, real, (name_a, name_b), protocol, extractors.metrics,
                                    per_phase=not args.no_per_phase)
    comparison = Comparison((name_a, name_b), rows, paired, protocol.to_dict(), list(extractors.weights),
                            {name_a: str(a), name_b: str(b), "real": str(args.real)})
    write_comparison(comparison, args.out)
    print(to_markdown(comparison))
    print(f"Comparison written to {args.out} (compare.html, compare.md, compare.json)")
    return 0


def _run_export(args) -> int:
    from ophora.eval.export import export_classification_dataset

    summary = export_classification_dataset(args.generated, args.out, class_index=args.class_index,
                                            val_fraction=args.val_fraction, seed=args.seed, link=args.link,
                                            allow_new_classes=args.allow_new_classes)
    print(summary.describe())
    return 0


def _run_train(args) -> int:
    from ophora.eval.train_classifier import TrainConfig, train_classifier

    result = train_classifier(TrainConfig(dataset=Path(args.dataset), model=args.model, epochs=args.epochs,
                                          batch_size=args.batch_size, lr=args.lr, num_frames=args.num_frames,
                                          size=args.size, seed=args.seed, out=Path(args.out) if args.out else None,
                                          device=_device(args.device)))
    print(f"val top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  ({result['val_clips']} val clips, "
          f"{result['num_classes']} classes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ophora.eval.clips import EvalInputError
    from ophora.eval.frechet import FrechetInputError
    from ophora.eval.weights import MissingWeightsError
    from ophora.generation.batch import BatchInputError
    from ophora.generation.options import ModelLoadError
    from ophora.generation.request import GenerationInputError

    args = build_parser().parse_args(argv)
    runners = {"metrics": _run_metrics, "compare": _run_compare, "paper-protocol": _run_paper_protocol,
               "export": _run_export, "train-classifier": _run_train}
    try:
        return runners[args.action](args)
    except (EvalInputError, FrechetInputError, MissingWeightsError, BatchInputError, ModelLoadError,
            GenerationInputError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run_paper_protocol(args) -> int:
    from ophora.eval.paper_protocol import run_paper_protocol

    return run_paper_protocol(args)
