"""`python -m ophora train encode|fit`: pre-encode a manifest, then run a stage config.

Examples::

    python -m ophora train encode --manifest curated/ophora160k.parquet --model THUDM/CogVideoX-2b \
        --output data/ophora160k-encoded
    accelerate launch --config_file ophora/training/configs/accelerate/ddp.yaml -m ophora train fit \
        ophora/training/configs/tpt.yaml
    python -m ophora train fit ophora/training/configs/p2ft.yaml --resume latest
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ophora train",
                                     description="Pre-encode clips and run TPT / P2FT training stages.")
    sub = parser.add_subparsers(dest="action", required=True)

    enc = sub.add_parser("encode", help="encode VAE latents and T5 embeddings of a manifest's clips")
    enc.add_argument("--manifest", required=True, help="parquet/CSV/JSONL with columns video and instruction")
    enc.add_argument("--model", required=True, help="pipeline folder or hub id (its VAE and T5 are used)")
    enc.add_argument("--output", required=True, help="folder for shards/ and index.json")
    enc.add_argument("--bucket", action="append", dest="buckets", metavar="FxHxW",
                     help="frame/resolution bucket, repeatable (default 49x480x720)")
    enc.add_argument("--shard-size", type=int, default=64, help="clips per safetensors shard (default 64)")
    enc.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                     help="storage precision of latents and embeddings (encoding itself runs in fp32)")
    enc.add_argument("--no-vae-tiling", action="store_true", help="encode whole frames (needs more memory)")
    enc.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: accelerate's choice)")
    enc.add_argument("--local-files-only", action="store_true", help="never contact the model hub")

    fit = sub.add_parser("fit", help="train one stage from a YAML config")
    fit.add_argument("config", help="stage YAML, e.g. ophora/training/configs/tpt.yaml")
    fit.add_argument("--set", action="append", dest="overrides", default=[], metavar="KEY=VALUE",
                     help="override a config key (YAML value), e.g. --set max_train_steps=100 --set lora.rank=16")
    fit.add_argument("--resume", default=None, metavar="latest|DIR", help="resume from a checkpoint")
    fit.add_argument("--stop-at-step", type=int, default=None,
                     help="checkpoint and stop at this step (to fit a job's time slot); resume later")
    fit.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    fit.add_argument("--local-files-only", action="store_true", help="never contact the model hub")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from ophora.training.config import ConfigError
    from ophora.training.dataset import DataError
    from ophora.training.encode import EncodeError
    from ophora.training.manifest import ManifestError

    try:
        if args.action == "encode":
            from ophora.training.encode import EncodeOptions, encode_manifest

            index = encode_manifest(EncodeOptions(
                manifest=args.manifest, model=args.model, output=args.output,
                buckets=tuple(args.buckets or ("49x480x720",)), shard_size=args.shard_size,
                storage_dtype=args.dtype, vae_tiling=not args.no_vae_tiling, device=args.device,
                local_files_only=args.local_files_only))
            if index is not None:
                print(f"Encoded {len(index['clips'])} clips into {args.output} "
                      f"({len(index['skipped'])} skipped, listed in index.json).")
            return 0
        from ophora.training.config import load_stage_config
        from ophora.training.trainer import fit as run_fit

        config = load_stage_config(args.config, args.overrides)
        result = run_fit(config, resume=args.resume, stop_at_step=args.stop_at_step, cpu=args.cpu,
                         local_files_only=args.local_files_only)
        if not result.is_main_process:
            return 0
        if result.model_dir is not None:
            print(f"Stage {config.stage}: {result.global_step} steps, final loss "
                  f"{result.losses.get(result.global_step, float('nan')):.5f}. Model: {result.model_dir} "
                  f"(python -m ophora generate --model {result.model_dir} ...)")
        else:
            print(f"Stopped at step {result.global_step}; resume with --resume latest.")
        return 0
    except (ConfigError, DataError, EncodeError, ManifestError, ValueError, OSError) as error:
        # OSError: a hub id that cannot be fetched (offline, typo), an unreadable file, a full disk.
        print(f"error: {error}", file=sys.stderr)
        return 2
