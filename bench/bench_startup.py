"""Quick start: seconds until `--help` and each kind of input error answer (they must not wait for torch).

Each command runs in a fresh process, several times; prints the median wall time per command and whether
torch, diffusers or gradio were imported on the way (from `python -X importtime`).

  python bench/bench_startup.py            # 5 runs each
  python bench/bench_startup.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "gradio", "transformers")


def _run(args: list[str], cwd: Path) -> tuple[float, int, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    return seconds, done.returncode, imported & set(HEAVY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = work / "tiny"
        subprocess.run([sys.executable, "-m", "ophora", "tiny", "--out", str(tiny)], cwd=REPO, check=True,
                       capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        (work / "a-file").write_text("x")
        (work / "latin1.csv").write_bytes("clip id,caption prompt\na,Caf\u00e9\n".encode("cp1252"))
        gen = ["-m", "ophora", "generate", "Inject fluid", "--model", str(tiny)]
        commands = {
            "python -m ophora --help": ["-m", "ophora", "--help"],
            "python -m ophora generate --help": ["-m", "ophora", "generate", "--help"],
            "python launch.py --help": [str(REPO / "launch.py"), "--help"],
            "launch.py --share (refused)": [str(REPO / "launch.py"), "--share", "--no-browser"],
            "generate --frames 0": [*gen, "--frames", "0", "--out", "c.mp4"],
            "generate --height 100": [*gen, "--height", "100", "--out", "c.mp4"],
            "generate --steps 0": [*gen, "--steps", "0", "--out", "c.mp4"],
            "generate --out a-file/c.mp4": [*gen, "--out", "a-file/c.mp4"],
            "generate --model no/such/folder": ["-m", "ophora", "generate", "x", "--model", "no/such/folder",
                                                "--out", "c.mp4"],
            "generate --csv latin1.csv": ["-m", "ophora", "generate", "--csv", "latin1.csv", "--out-dir", "o",
                                          "--model", str(tiny)],
        }
        print(f"{'command':<36} {'median s':>9} {'max s':>7} {'exit':>5}  heavy imports")
        for name, command in commands.items():
            results = [_run(command, work) for _ in range(args.runs)]
            times = [r[0] for r in results]
            heavy = set().union(*(r[2] for r in results))
            print(f"{name:<36} {statistics.median(times):>9.2f} {max(times):>7.2f} {results[0][1]:>5}  "
                  f"{', '.join(sorted(heavy)) or 'none'}")


if __name__ == "__main__":
    main()
