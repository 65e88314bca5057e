"""Config loading: ``migkit.load_config`` against PyYAML's C loader on the same big files.

Files of about 1, 3 and 10 MB are generated (many named configs, each with a few entries,
device filters, flow and block mappings, as large generated configs look). For each size the
file is loaded, in this one process and alternately, by ``yaml.load(text, yaml.CSafeLoader)``
(the fastest way PyYAML reads YAML; it builds plain dicts and keeps no positions) and by
``migkit.config.load_config`` (which validates and keeps file:line:col for every value). The
ratio migkit / C loader is what the goal is about (<= 1.5x at 10 MB); the per-MB times show
whether loading is linear in size. Raw numbers go to ``bench/results/config.json``.

    python bench/bench_config.py [--sizes 1,3,10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import tempfile
import time

import yaml

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

PROFILES = ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
FILTERS = ("0x233010DE", "0x233110DE", "0x20B010DE", "0x20B210DE", "0x20B710DE")


def config_text(megabytes: float) -> str:
    """A valid v1 file of about ``megabytes`` MB."""
    target = int(megabytes * 1_000_000)
    parts = ["version: v1\nmig-configs:\n"]
    size = len(parts[0])
    k = 0
    while size < target:
        profile = PROFILES[k % len(PROFILES)]
        other = PROFILES[(k + 2) % len(PROFILES)]
        block = (
            f"  config-{k}:\n"
            f'    - device-filter: ["{FILTERS[k % 5]}", "{FILTERS[(k + 1) % 5]}"]\n'
            f"      devices: [{k % 8}, {(k + 3) % 8}]\n"
            f"      mig-enabled: true\n"
            f'      mig-devices: {{"{profile}": 1, "{other}": 2}}\n'
            f"    - devices: all\n"
            f"      mig-enabled: true\n"
            f"      mig-devices:\n"
            f'        "{profile}": {1 + k % 3}\n'
            f"    - device-filter: {FILTERS[(k + 2) % 5]!r}\n"
            f"      devices: all\n"
            f"      mig-enabled: false\n"
        )
        parts.append(block)
        size += len(block)
        k += 1
    return "".join(parts)


def c_load(path: pathlib.Path) -> object:
    """PyYAML's C loader as a program would call it: read the file, build plain data."""
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def time_once(func: object, *args: object) -> float:
    start = time.perf_counter()
    func(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def run(sizes: list[float], repeat: int) -> dict[str, object]:
    from migkit.config import load_config

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in sizes:
            text = config_text(megabytes)
            path = pathlib.Path(tmp) / f"config-{megabytes:g}mb.yaml"
            path.write_text(text)
            c_times: list[float] = []
            migkit_times: list[float] = []
            for _ in range(repeat):
                c_times.append(time_once(c_load, path))
                migkit_times.append(time_once(load_config, str(path)))
            c_med, m_med = statistics.median(c_times), statistics.median(migkit_times)
            mb = len(text) / 1_000_000
            rows.append(
                {
                    "megabytes": round(mb, 2),
                    "configs": text.count("\n  config-"),
                    "csafeloader_s": c_med,
                    "migkit_s": m_med,
                    "ratio": m_med / c_med,
                    "migkit_s_per_mb": m_med / mb,
                }
            )
            print(
                f"{mb:5.1f} MB: CSafeLoader {c_med:6.2f} s, migkit {m_med:6.2f} s, "
                f"ratio {m_med / c_med:.2f}x, migkit {m_med / mb:.2f} s/MB",
                flush=True,
            )
    return {"repeat": repeat, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,3,10", help="sizes in MB, comma separated")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    result = run(sizes, args.repeat)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "config.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
