"""Exact MIG state saved to JSON and restored at the same placements.

A checkpoint records, per GPU UUID, the MIG mode and every GPU instance with its profile ID
and placement, and every compute instance with its profile ID and placement. Restoring
re-creates them at exactly those placements (no solver involved), touching only GPUs whose
state differs.

Two file formats are read, and written on request:

``migkit`` (the default)::

    {"version": "v1", "gpus": [{"uuid": "GPU-...", "index": 0, "model": "h100-80gb",
      "mig_enabled": true, "gpu_instances": [{"profile_id": 19, "start": 0, "size": 1,
      "compute_instances": [{"profile_id": 0, "start": 0, "size": 1}]}]}]}

``profile_id`` is NVML's profile ID (``nvidia-smi mig -lgip``'s ID column); ``model`` lets
the file be checked against the bundled GPU tables before the node is even opened.

``mig-parted`` (what ``nvidia-mig-parted checkpoint`` writes, e.g. the systemd package's
``/var/lib/nvidia-mig-manager/checkpoint.json``)::

    {"Version": "v1", "MigState": {"Devices": [{"UUID": "GPU-...", "MigMode": 1,
      "GpuInstances": [{"ProfileID": 0, "Placement": {"Start": 0, "Size": 1},
      "ComputeInstances": [{"ProfileID": 0, "EngProfileID": 0}]}]}]}}

There ``ProfileID`` is NVML's profile *index* (the ``NVML_GPU_INSTANCE_PROFILE_*`` and
``NVML_COMPUTE_INSTANCE_PROFILE_*`` constants), and compute-instance placements are not
recorded: upstream creates them without one. migkit places them left to right in file order,
each at the lowest free placement its profile allows.

Every file is validated as strictly as a config before anything changes: a regular file under
:data:`MAX_BYTES`, JSON nested no deeper than the format, exact keys and types (booleans are
booleans), non-negative starts, positive sizes, no two instances overlapping, and — against the
GPU's profile tables (the bundled model named in the file, and the node's own tables) — known
profile IDs at placements the profile allows. Errors are :class:`~migkit.errors.ConfigError`
naming the file and the field (``gpus[0].gpu_instances[2].start``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from migkit.checkpoint.reader import _Reader, load, read
from migkit.checkpoint.values import (
    FORMAT_VERSION,
    FORMATS,
    MAX_BYTES,
    Checkpoint,
    Format,
    SavedComputeInstance,
    SavedGpu,
    SavedGpuInstance,
)
from migkit.hardware import planning_model
from migkit.models import GpuState

if TYPE_CHECKING:
    from migkit.execution.report import ApplyReport
    from migkit.nvml.node import NodeLike

__all__ = [
    "FORMATS",
    "MAX_BYTES",
    "Checkpoint",
    "Format",
    "SavedComputeInstance",
    "SavedGpu",
    "SavedGpuInstance",
    "capture",
    "dump",
    "for_node",
    "load",
    "read",
    "restore",
]


# --------------------------------------------------------------------------- capture / dump


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
        saved.append(SavedGpu(gpu.uuid, gpu.index, gpu.mig_enabled, gis, gpu.model_name))
    return Checkpoint(tuple(saved))


def dump(
    checkpoint: Checkpoint, fmt: Format = "migkit", gpus: Sequence[GpuState] = ()
) -> str:
    """The checkpoint as JSON text in ``fmt``; ``mig-parted`` needs the snapshot's tables."""
    if fmt == "mig-parted":
        return _dump_mig_parted(checkpoint, gpus)
    if fmt != "migkit":
        raise ValueError(f"unknown checkpoint format {fmt!r} (use migkit or mig-parted)")
    documents = []
    for gpu in checkpoint.gpus:
        entry = attrs.asdict(gpu)
        if not gpu.model:
            del entry["model"]
        documents.append(entry)
    return json.dumps({"version": FORMAT_VERSION, "gpus": documents}, indent=2) + "\n"


def _dump_mig_parted(checkpoint: Checkpoint, gpus: Sequence[GpuState]) -> str:
    by_uuid = {gpu.uuid: gpu for gpu in gpus}
    devices = []
    for saved in checkpoint.gpus:
        gpu = by_uuid.get(saved.uuid)
        if gpu is None:
            raise ValueError(f"GPU {saved.uuid} is not in the snapshot")
        instances = []
        ordered = sorted(
            saved.gpu_instances, key=lambda g: (gpu.profile(g.profile_id).index, g.start)
        )
        for gi in ordered:
            profile = gpu.profile(gi.profile_id)
            instances.append(
                {
                    "ProfileID": profile.index,
                    "Placement": {"Start": gi.start, "Size": gi.size},
                    "ComputeInstances": [
                        {"ProfileID": profile.compute_profile(ci.profile_id).index, "EngProfileID": 0}
                        for ci in gi.compute_instances
                    ],
                }
            )
        devices.append(
            {
                "UUID": saved.uuid,
                "MigMode": 1 if saved.mig_enabled else 0,
                "GpuInstances": instances if saved.mig_enabled else None,
            }
        )
    document = {"Version": FORMAT_VERSION, "MigState": {"Devices": devices}}
    return json.dumps(document, separators=(",", ":"))  # as upstream: compact, no newline


# --------------------------------------------------------------------------- against the node


def for_node(checkpoint: Checkpoint, gpus: Sequence[GpuState], *, file: str | None = None) -> Checkpoint:
    """The checkpoint checked against a snapshot's own profile tables, ready to restore.

    Every GPU must be on the node and MIG-capable; every instance must use a profile of that
    GPU at a placement it allows. A mig-parted checkpoint is resolved here (profile indices to
    IDs, compute-instance placements chosen). Nothing is changed on the node.
    """
    reader = _Reader(file)
    by_uuid = {gpu.uuid: gpu for gpu in gpus}
    prefix = "MigState.Devices" if checkpoint.format == "mig-parted" else "gpus"
    resolved = []
    for k, saved in enumerate(checkpoint.gpus):
        state = by_uuid.get(saved.uuid)
        if state is None:
            raise reader.error(
                f"{prefix}[{k}]", f"GPU {saved.uuid} is not on this node"
            )
        if not state.mig_capable:
            raise reader.error(f"{prefix}[{k}]", f"GPU {saved.uuid} is not MIG-capable")
        # NVML lists compute-instance profiles only for live GPU instances; the planning
        # model completes them from the bundled tables (or the per-size rule).
        profiles = planning_model(state).profiles
        if not checkpoint.resolved:
            saved = reader.resolve_upstream(saved, k, profiles, state.index)
        reader.against_tables(
            saved, f"{prefix}[{k}]", profiles, upstream=checkpoint.format == "mig-parted"
        )
        resolved.append(saved)
    return Checkpoint(tuple(resolved), format=checkpoint.format, resolved=True)


def restore(node: NodeLike, saved: Checkpoint, **options: Any) -> ApplyReport:
    """Make the node match the checkpoint at its exact placements (see
    :func:`migkit.execution.orchestrate.restore`)."""
    from migkit.execution.orchestrate import restore as restore_checkpoint

    if not saved.resolved:
        saved = for_node(saved, node.snapshot(), file=options.get("checkpoint_file"))
    return restore_checkpoint(node, saved, **options)
