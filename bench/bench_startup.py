"""Quick start: seconds until `--help` and each kind of input error answer (they must not wait for torch).

Each command runs in a fresh process, several times; prints the median wall time per command, its exit code,
whether it met the target (a refusal: exit code 2 in under 3 s) and whether torch, diffusers or gradio were
imported on the way (from `python -X importtime`). Refusals cover the launcher (port in use or out of range,
a network bind without HTTPS, kiosk steps out of range) and the generation CLI (bad sizes, an output
folder that cannot be created, damaged config and tokenizer files, a bad request to a tiny model not yet
built). Timings on a shared machine are noisy: compare medians from the same machine.

  python bench/bench_startup.py            # 5 runs each
  python bench/bench_startup.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "gradio", "transformers")


def _run(args: list[str], cwd: Path) -> tuple[float, int, set[str]]:
    # OPHORA_CACHE: an empty cache, so `--model tiny` would have to build the model (it must not, for a bad request)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OPHORA_CACHE": str(cwd / "empty-cache"),
           "OPHORA_STUDIO_HOME": str(cwd / "home")}
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
        damaged = work / "damaged"
        shutil.copytree(tiny, damaged)
        (damaged / "model_index.json").write_text('{"_class_name": "CogVideoXPipeline",')
        (damaged / "tokenizer" / "tokenizer.json").write_text("")
        taken = socket.socket()  # a port another program holds
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        launch = [str(REPO / "launch.py"), "--no-browser"]
        (work / "latin1.csv").write_bytes("clip id,caption prompt\na,Caf\u00e9\n".encode("cp1252"))
        gen = ["-m", "ophora", "generate", "Inject fluid", "--model", str(tiny)]
        commands = {
            "python -m ophora --help": ["-m", "ophora", "--help"],
            "python -m ophora generate --help": ["-m", "ophora", "generate", "--help"],
            "python launch.py --help": [str(REPO / "launch.py"), "--help"],
            "launch.py --share (refused)": [*launch, "--share"],
            "launch.py --port <in use>": [*launch, "--mode", "rater", "--port", port],
            "launch.py --port 70000": [*launch, "--port", "70000"],
            "launch.py --host 0.0.0.0 (no TLS)": [*launch, "--mode", "rater", "--host", "0.0.0.0"],
            "launch.py --kiosk-steps 800": [*launch, "--mode", "kiosk", "--kiosk-steps", "800"],
            "generate --frames 0": [*gen, "--frames", "0", "--out", "c.mp4"],
            "generate --height 100": [*gen, "--height", "100", "--out", "c.mp4"],
            "generate --steps 0": [*gen, "--steps", "0", "--out", "c.mp4"],
            "generate --out a-file/c.mp4": [*gen, "--out", "a-file/c.mp4"],
            "generate --out /proc/nonexistent/x.mp4": [*gen, "--out", "/proc/nonexistent/x.mp4"],
            "generate (damaged configs)": ["-m", "ophora", "generate", "x", "--model", str(damaged), "--out", "c.mp4"],
            "generate --model tiny --steps 0 (unbuilt)": ["-m", "ophora", "generate", "x", "--model", "tiny",
                                                          "--steps", "0", "--out", "c.mp4"],
            "generate --model no/such/folder": ["-m", "ophora", "generate", "x", "--model", "no/such/folder",
                                                "--out", "c.mp4"],
            "generate --csv latin1.csv": ["-m", "ophora", "generate", "--csv", "latin1.csv", "--out-dir", "o",
                                          "--model", str(tiny)],
        }
        print(f"{'command':<42} {'median s':>9} {'max s':>7} {'exit':>5} {'target':>7}  heavy imports")
        for name, command in commands.items():
            results = [_run(command, work) for _ in range(args.runs)]
            times = [r[0] for r in results]
            heavy = set().union(*(r[2] for r in results))
            code = results[0][1]
            target = "--help" if "--help" in name else ("met" if code == 2 and max(times) < 3 else "MISSED")
            print(f"{name:<42} {statistics.median(times):>9.2f} {max(times):>7.2f} {code:>5} {target:>7}  "
                  f"{', '.join(sorted(heavy)) or 'none'}")
        taken.close()


if __name__ == "__main__":
    main()
