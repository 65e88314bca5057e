"""Checkpoint values: what a checkpoint holds, and the limits every file is held to."""

from __future__ import annotations

from typing import Literal

import attrs

FORMAT_VERSION = "v1"
Format = Literal["migkit", "mig-parted"]
FORMATS: tuple[Format, ...] = ("migkit", "mig-parted")
MAX_BYTES = 4 << 20  # a full 8-GPU checkpoint is a few kB
MAX_GPUS = 64
MAX_INSTANCES = 64  # per GPU, and compute instances per GPU instance
MAX_DEPTH = 8  # the deepest legitimate nesting is 6 (upstream's format)


@attrs.frozen
class SavedComputeInstance:
    """A compute instance: CI profile ID and placement in compute slices of its GI."""

    profile_id: int
    start: int
    size: int


@attrs.frozen
class SavedGpuInstance:
    """A GPU instance: GI profile ID, placement in memory slices, and its compute instances."""

    profile_id: int
    start: int
    size: int
    compute_instances: tuple[SavedComputeInstance, ...] = ()


@attrs.frozen
class SavedGpu:
    """One GPU's saved state; ``model`` is the bundled model name ("" when unknown)."""

    uuid: str
    index: int
    mig_enabled: bool
    gpu_instances: tuple[SavedGpuInstance, ...] = ()
    model: str = ""


@attrs.frozen
class Checkpoint:
    """A validated checkpoint, as :func:`executor.restore` takes it.

    ``resolved`` is False for a mig-parted file read without the node: its profile IDs are
    still NVML profile *indices* and its compute instances have no placements yet; use
    :func:`for_node` to turn it into a resolved checkpoint for a snapshot.
    """

    gpus: tuple[SavedGpu, ...]
    format: Format = "migkit"
    resolved: bool = True
