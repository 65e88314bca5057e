"""Exact MIG state saved to JSON and restored at the same placements.

The checkpoint records, per GPU UUID, the MIG mode and every GPU instance with its profile
ID and placement, and every compute instance with its profile ID and placement. Restoring
re-creates them at exactly those placements (no solver involved), touching only GPUs whose
state differs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from migkit.errors import ConfigError
from migkit.models import GpuState

if TYPE_CHECKING:
    from migkit.execution.report import ApplyReport
    from migkit.nvml.node import NodeLike

FORMAT_VERSION = "v1"


@attrs.frozen
class SavedComputeInstance:
    profile_id: int
    start: int
    size: int


@attrs.frozen
class SavedGpuInstance:
    profile_id: int
    start: int
    size: int
    compute_instances: tuple[SavedComputeInstance, ...] = ()


@attrs.frozen
class SavedGpu:
    uuid: str
    index: int
    mig_enabled: bool
    gpu_instances: tuple[SavedGpuInstance, ...] = ()


@attrs.frozen
class Checkpoint:
    gpus: tuple[SavedGpu, ...]


def capture(gpus: Sequence[GpuState]) -> Checkpoint:
    """The exact state of the MIG-capable GPUs in a snapshot."""
    saved = []
    for gpu in gpus:
        if not gpu.mig_capable:
            continue
        gis = tuple(
            SavedGpuInstance(
                gi.profile_id,
                gi.start,
                gi.size,
                tuple(
                    SavedComputeInstance(ci.profile_id, ci.start, ci.size)
                    for ci in sorted(gi.compute_instances, key=lambda c: (c.start, c.id))
                ),
            )
            for gi in sorted(gpu.gpu_instances, key=lambda g: (g.start, g.size))
        )
        saved.append(SavedGpu(gpu.uuid, gpu.index, gpu.mig_enabled, gis))
    return Checkpoint(tuple(saved))


def dump(checkpoint: Checkpoint) -> str:
    doc: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "gpus": [attrs.asdict(g) for g in checkpoint.gpus],
    }
    return json.dumps(doc, indent=2) + "\n"


def load(text: str, *, file: str | None = None) -> Checkpoint:
    """Parse a checkpoint file; malformed content raises ConfigError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"not a migkit checkpoint: {err.msg}", file=file, line=err.lineno, column=err.colno
        ) from None
    try:
        if doc.get("version") != FORMAT_VERSION:
            raise ConfigError(
                f"unsupported checkpoint version {doc.get('version')!r} (expected {FORMAT_VERSION!r})",
                file=file,
            )
        gpus = []
        for g in doc["gpus"]:
            gis = tuple(
                SavedGpuInstance(
                    int(gi["profile_id"]),
                    int(gi["start"]),
                    int(gi["size"]),
                    tuple(
                        SavedComputeInstance(
                            int(ci["profile_id"]), int(ci["start"]), int(ci["size"])
                        )
                        for ci in gi.get("compute_instances", ())
                    ),
                )
                for gi in g.get("gpu_instances", ())
            )
            gpus.append(
                SavedGpu(str(g["uuid"]), int(g.get("index", -1)), bool(g["mig_enabled"]), gis)
            )
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ConfigError(f"malformed checkpoint: {err!r}", file=file) from None
    return Checkpoint(tuple(gpus))


def restore(node: NodeLike, saved: Checkpoint, **options: Any) -> ApplyReport:
    """Make the node match the checkpoint at its exact placements (see
    :func:`migkit.execution.orchestrate.restore`)."""
    from migkit.execution.orchestrate import restore as restore_checkpoint

    return restore_checkpoint(node, saved, **options)
