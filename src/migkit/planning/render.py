"""Human and JSON renderings of GPU profile tables (``migkit profiles``)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from migkit.models import GpuModel, GpuState, Profile


def _starts(profile: Profile) -> str:
    if not profile.placements:
        return "-"
    size = profile.placements[0].size
    return "{" + ",".join(str(p.start) for p in profile.placements) + "}:" + str(size)


def _profile_row(profile: Profile) -> dict[str, object]:
    return {
        "id": profile.id,
        "name": profile.name,
        "nvml_name": profile.nvml_name,
        "instances": profile.instance_count,
        "memory_mib": profile.memory_mib,
        "multiprocessors": profile.multiprocessors,
        "decoders": profile.decoders,
        "encoders": profile.encoders,
        "copy_engines": profile.copy_engines,
        "jpegs": profile.jpegs,
        "ofas": profile.ofas,
        "placements": [[p.start, p.size] for p in profile.placements],
        "compute_profiles": [
            {
                "id": cp.id,
                "name": cp.name,
                "instances": cp.instance_count,
                "multiprocessors": cp.multiprocessors,
                "placements": [[p.start, p.size] for p in cp.placements],
            }
            for cp in profile.compute_profiles
        ],
        "mark": profile.mark,
        "placements_mark": profile.placements_mark,
    }


def profiles_table(gpus: Sequence[GpuModel | GpuState], fmt: str = "text") -> str:
    """Profiles and their possible placements per GPU, like ``nvidia-smi mig -lgip``/``-lgipp``."""
    if fmt == "json":
        doc = []
        for i, gpu in enumerate(gpus):
            model: GpuModel = gpu.as_model() if isinstance(gpu, GpuState) else gpu
            doc.append(
                {
                    "gpu": i,
                    "name": model.product_name,
                    "model": model.name,
                    "mig_capable": model.mig_capable,
                    "profiles": [_profile_row(p) for p in model.profiles],
                }
            )
        return json.dumps(doc, indent=2)
    lines: list[str] = []
    for i, gpu in enumerate(gpus):
        model = gpu.as_model() if isinstance(gpu, GpuState) else gpu
        index = gpu.index if isinstance(gpu, GpuState) else i
        lines.append(f"GPU {index}: {model.product_name} ({model.name})")
        if not model.profiles:
            lines.append("  MIG not supported")
            continue
        lines.append(
            f"  {'ID':>3}  {'PROFILE':<18} {'INST':>4} {'MEMORY':>10} {'SM':>4} {'DEC':>3} {'ENC':>3} "
            f"{'CE':>3} {'JPG':>3} {'OFA':>3}  PLACEMENTS"
        )
        for p in model.profiles:
            marks = {p.mark, p.placements_mark} - {"observed"}
            mark = f"  ({'inferred' if 'inferred' in marks else 'derived'})" if marks else ""
            lines.append(
                f"  {p.id:>3}  {p.name:<18} {p.instance_count:>4} {p.memory_mib / 1024:>6.2f} GiB "
                f"{p.multiprocessors:>4} {p.decoders:>3} {p.encoders:>3} {p.copy_engines:>3} {p.jpegs:>3} "
                f"{p.ofas:>3}  {_starts(p)}{mark}"
            )
    return "\n".join(lines)
