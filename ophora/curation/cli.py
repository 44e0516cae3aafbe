"""`python -m ophora curate`: narrated videos in, a curated instruction manifest (parquet) and report out."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ophora curate",
        epilog="Release a curated manifest: python -m ophora curate release CURATED.parquet --out DIR",
        description="Probe, resolution-filter, dynamics-filter (PySceneDetect), privacy-screen and refine the "
                    "captions of narrated surgery videos into a clean instruction manifest. Resumable: rerun "
                    "the same command to finish an interrupted run or retry clips that errored.")
    parser.add_argument("--input", required=True,
                        help="manifest (.csv, .jsonl, .parquet with columns video, caption[, start, end, clip_id]) "
                             "or a folder of videos (caption from a .txt beside each video)")
    parser.add_argument("--out", required=True, help="output manifest, e.g. curated.parquet")
    parser.add_argument("--config", help="YAML overriding ophora/curation/default_config.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set refine.backend=openai (repeatable)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local: a process per core; ray: Ray tasks (local Ray or --ray-address)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    parser.add_argument("--workers", type=int, default=None, help="processes for --backend local (default: cores)")
    parser.add_argument("--fresh", action="store_true", help="ignore an earlier run's results in --out")
    parser.add_argument("--limit", type=int, default=None, help="curate only the first N clips (a trial run)")
    parser.add_argument("--quiet", action="store_true", help="no per-clip progress lines")
    parser.add_argument("--keep-narration", action="store_true",
                        help="keep the raw narration in the curated manifest (column narration); by default it "
                             "stays only in OUT.narration.private.parquet. `curate release` never copies it")
    return parser


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "release":
        from .release import main as release_main

        return release_main(argv[1:])
    args = build_parser().parse_args(argv)
    from .config import ConfigError, load_config
    from .inputs import DuplicateRowsWarning, InputError, read_tasks
    from .pipeline import output_paths, run_pipeline
    from .report import write_report

    try:
        config = load_config(args.config, args.overrides + (["run.keep_narration=true"] if args.keep_narration else []))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DuplicateRowsWarning)
            tasks = read_tasks(args.input)
    except (ConfigError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for warning in caught:  # said plainly, not as a Python warning with a source line
        if issubclass(warning.category, DuplicateRowsWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    # FFmpeg's error messages are how the decoding pass detects damaged frames: OpenCV's default (errors only,
    # on standard error) is kept, and decode.ffmpeg_errors captures them so they never reach the terminal.
    if args.limit is not None:
        tasks = tasks[: args.limit]

    def progress(row: dict, count: int, total: int) -> None:
        if not args.quiet:
            verdict = row["decision"] if row["decision"] == "keep" else f"{row['decision']}: {row['reason']}"
            print(f"[{count}/{total}] {row['clip_id']} {verdict}", flush=True)

    from .chat_client import EndpointDown

    began = time.perf_counter()
    previous_term = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the run as Ctrl-C does
    try:
        frame = run_pipeline(tasks, config, args.out, backend=args.backend, workers=args.workers,
                             ray_address=args.ray_address, fresh=args.fresh, progress=progress)
    except KeyboardInterrupt:
        print(f"interrupted: the workers are stopped; every clip finished so far is saved in "
              f"{output_paths(args.out)['journal']}. Rerun the same command to continue.", file=sys.stderr)
        return 130
    except EndpointDown as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # e.g. no face cascade, unknown backend
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    paths = output_paths(args.out)
    summary = write_report(frame, paths["report"], paths["summary"])
    elapsed = time.perf_counter() - began
    print(f"{summary['clips']} clips in {elapsed:.1f} s: {summary['kept']} kept, {summary['dropped']} dropped, "
          f"{summary['errors']} errors" + (" (rerun the same command to retry them)" if summary["errors"] else ""))
    for stage, counts in summary["stages"].items():
        print(f"  {stage:<9} reached {counts['reached']:>6}  passed {counts['passed']:>6}  "
              f"dropped {counts['dropped']:>6}  errors {counts['errors']:>4}")
    print(f"manifest: {paths['parquet']}\nreport:   {paths['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
