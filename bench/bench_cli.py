"""CLI start-up: ``migkit --version`` and ``migkit assert`` on a simulated 8-GPU node.

Each command runs as a fresh process, as an operator or the MIG manager runs it; the time is
compared with a bare ``python -c pass`` measured the same way (the interpreter's own start-up),
so the ratio shows what migkit adds. ``import migkit`` is lazy: ``--version`` must not import
the planner, the shim or YAML. Raw numbers go to ``bench/results/cli.json``.

    python bench/bench_cli.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
CONFIG = """\
version: v1
mig-configs:
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
"""


def timed(argv: list[str], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr}")
    return samples


def heavy_modules_on_version() -> list[str]:
    code = (
        "import sys, runpy; sys.argv=['migkit','--version']\n"
        "try:\n    runpy.run_module('migkit', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('MODULES=' + ','.join(m for m in ('yaml','migkit.planning.solver','migkit.nvml._binding',"
        "'migkit.execution.executor','attrs') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("MODULES="))
    return [m for m in line.removeprefix("MODULES=").split(",") if m]


def run(repeat: int) -> dict[str, object]:
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "config.yaml")
        pathlib.Path(cfg).write_text(CONFIG)
        state = os.path.join(d, "node.state")
        subprocess.run(
            [
                py,
                "-m",
                "migkit",
                "--simulate",
                "8xh100-80gb",
                "--sim-state",
                state,
                "apply",
                "-f",
                cfg,
                "-c",
                "all-balanced",
            ],
            check=True,
            capture_output=True,
        )
        bare = timed([py, "-c", "pass"], repeat)
        version = timed([py, "-m", "migkit", "--version"], repeat)
        assert_ = timed(
            [py, "-m", "migkit", "--sim-state", state, "assert", "-f", cfg, "-c", "all-balanced"],
            repeat,
        )
    med = statistics.median
    return {
        "repeat": repeat,
        "python_bare_s": bare,
        "version_s": version,
        "assert_8_gpus_s": assert_,
        "version_over_bare": med(version) / med(bare),
        "assert_over_bare": med(assert_) / med(bare),
        "modules_loaded_by_version": heavy_modules_on_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    result = run(args.repeat)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli.json").write_text(json.dumps(result, indent=2) + "\n")
    med = statistics.median
    print(f"python -c pass        : {med(result['python_bare_s']) * 1000:7.1f} ms")  # type: ignore[arg-type]
    print(
        f"migkit --version      : {med(result['version_s']) * 1000:7.1f} ms "  # type: ignore[arg-type]
        f"({result['version_over_bare']:.2f}x bare python)"
    )
    print(
        f"migkit assert (8 GPUs): {med(result['assert_8_gpus_s']) * 1000:7.1f} ms "  # type: ignore[arg-type]
        f"({result['assert_over_bare']:.2f}x bare python)"
    )
    print(f"heavy modules imported by --version: {result['modules_loaded_by_version'] or 'none'}")


if __name__ == "__main__":
    main()
