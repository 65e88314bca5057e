"""Frozen value types shared by every layer.

Placements of GPU instances count **memory slices**; placements of compute instances count
**compute slices inside their GPU instance** (NVML's own conventions).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import TypedDict

import attrs

from migkit.names import ProfileCounts, canonical_from_nvml

# NVML GPU-instance profile indices (the argument of ...GetGpuInstanceProfileInfo).
GI_INDEX_NAMES: dict[int, str] = {
    0x0: "1_SLICE",
    0x1: "2_SLICE",
    0x2: "3_SLICE",
    0x3: "4_SLICE",
    0x4: "7_SLICE",
    0x5: "8_SLICE",
    0x6: "6_SLICE",
    0x7: "1_SLICE_REV1",
    0x8: "2_SLICE_REV1",
    0x9: "1_SLICE_REV2",
    0x0A: "1_SLICE_GFX",
    0x0B: "2_SLICE_GFX",
    0x0C: "4_SLICE_GFX",
    0x0D: "1_SLICE_NO_ME",
    0x0E: "2_SLICE_NO_ME",
    0x0F: "1_SLICE_ALL_ME",
    0x10: "2_SLICE_ALL_ME",
    0x11: "3_SLICE_GFX",
}
ALL_ME_INDICES = frozenset({0x0F, 0x10})
NO_ME_INDICES = frozenset({0x0D, 0x0E})

ARCH_HOPPER = 9  # NVML's architecture number for Hopper; Ampere is 7


class MigMode(enum.IntEnum):
    """A GPU's MIG mode as NVML reports it."""

    DISABLED = 0
    ENABLED = 1


MIG_DISABLED = MigMode.DISABLED
MIG_ENABLED = MigMode.ENABLED


class EngineCounts(TypedDict):
    """A profile's or MIG device's copy and media engines, as keyword arguments of the models."""

    copy_engines: int
    decoders: int
    encoders: int
    jpegs: int
    ofas: int


class _TextEnum(str, enum.Enum):
    """A string-valued Enum that prints and formats as its value (and equals it)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class CoverageStatus(_TextEnum):
    """Whether a config governs a GPU: ``covered``, ``not covered`` (left untouched) or
    ``skipped`` (not MIG-capable, reached only through ``devices: all``)."""

    COVERED = "covered"
    NOT_COVERED = "not covered"
    SKIPPED = "skipped"


class Outcome(_TextEnum):
    """What an apply or restore did to one GPU."""

    UNCHANGED = "unchanged"
    APPLIED = "applied"
    RESTORED = "restored"
    FAILED = "failed"
    NOT_ATTEMPTED = "not attempted"
    NOT_COVERED = "not covered"
    SKIPPED = "skipped"
    COVERED = "covered"  # covered, but nothing to do: a GPU without MIG that should stay so
    PENDING = "pending reset"


@attrs.frozen(order=True)
class Placement:
    """A start and a size in slices; ``Placement(4, 4)`` prints as ``4:4``."""

    start: int = attrs.field(validator=attrs.validators.ge(0))
    size: int = attrs.field(validator=attrs.validators.ge(1))

    @property
    def end(self) -> int:
        """One past the last slice covered."""
        return self.start + self.size

    @property
    def mask(self) -> int:
        """Bit mask of the slices covered (bit ``i`` = slice ``i``)."""
        return ((1 << self.size) - 1) << self.start

    def overlaps(self, other: Placement) -> bool:
        return self.start < other.end and other.start < self.end

    def __str__(self) -> str:
        return f"{self.start}:{self.size}"

    @classmethod
    def parse(cls, text: str) -> Placement:
        """``"4:4"`` -> ``Placement(4, 4)``."""
        start, _, size = text.partition(":")
        return cls(int(start), int(size))


def _placements(value: Iterable[Placement | tuple[int, int]]) -> tuple[Placement, ...]:
    return tuple(p if isinstance(p, Placement) else Placement(*p) for p in value)


@attrs.frozen
class ComputeProfile:
    """A compute-instance profile available inside GPU instances of one GI profile."""

    id: int
    index: int
    name: str  # canonical migkit name: "1c.3g.40gb", or the GI's name when it covers the GI
    slice_count: int  # compute slices (C)
    instance_count: int
    multiprocessors: int
    placements: tuple[Placement, ...] = attrs.field(converter=_placements, default=())
    nvml_name: str = ""
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    mark: str = "observed"  # "observed" | "inferred" | "derived"


@attrs.frozen
class Profile:
    """A GPU-instance profile of one GPU model (one row of ``nvidia-smi mig -lgip``)."""

    id: int  # NVML profile ID (19 for 1g.10gb on H100), not the index
    index: int  # NVML profile index (0x0 .. 0x11)
    name: str  # canonical migkit name: "1g.10gb", "1g.10gb+me", "1g.24gb-me"
    slice_count: int  # compute slices (G)
    memory_slices: int  # size of every placement, in memory slices
    instance_count: int
    memory_mib: int
    multiprocessors: int
    placements: tuple[Placement, ...] = attrs.field(converter=_placements)
    nvml_name: str = ""  # NVML's own name, "MIG 1g.10gb"
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    compute_profiles: tuple[ComputeProfile, ...] = ()
    capabilities: int = 0  # NVML's capability bits of the profile
    device_memory_mib: int = 0  # memory a MIG device of this profile reports (0 = memory_mib)
    mark: str = "observed"
    placements_mark: str = "observed"

    @property
    def sort_key(self) -> tuple[int, int, int]:
        """The order ``nvidia-smi mig -lgip`` lists profiles in (19, 20, 15, 14, 9, 5, 0 on H100)."""
        return (self.slice_count, self.memory_mib, self.index)

    @property
    def all_me(self) -> bool:
        """True for +me.all profiles: while one exists only -me profiles can be created."""
        return self.index in ALL_ME_INDICES

    @property
    def no_me(self) -> bool:
        """True for -me profiles (no media engines)."""
        return self.index in NO_ME_INDICES

    def compute_profile(self, key: str | int) -> ComputeProfile:
        """Look a compute profile up by canonical name or CI profile ID."""
        for cp in self.compute_profiles:
            if key == cp.name or key == cp.id:
                return cp
        from migkit.errors import UnknownProfileError

        raise UnknownProfileError(f"no compute profile {key!r} in GPU instance profile {self.name}")


@attrs.frozen
class GpuModel:
    """A GPU product's MIG geometry: profiles with their placements, and its identity."""

    name: str  # migkit model name, "h100-80gb"
    product_name: str  # nvmlDeviceGetName, "NVIDIA H100 80GB HBM3"
    pci_device_id: int  # packed (device << 16) | vendor, 0x233010DE
    pci_subsystem_id: int
    memory_mib: int
    architecture: int
    mig_capable: bool
    memory_slices: int  # 8, 4, or 0 for a GPU without MIG
    max_mig_devices: int
    profiles: tuple[Profile, ...] = ()
    driver: str = ""
    sources: tuple[str, ...] = ()

    def profile(self, key: str | int) -> Profile:
        """Look a GPU-instance profile up by canonical name or profile ID."""
        for p in self.profiles:
            if key == p.name or key == p.id:
                return p
        from migkit.errors import UnknownProfileError

        offered = ", ".join(p.name for p in self.profiles) or "none (MIG not supported)"
        raise UnknownProfileError(
            f"{key!r} is not a MIG profile of {self.name} ({self.product_name}); "
            f"it offers: {offered}"
        )

    def find_profile(self, key: str | int) -> Profile | None:
        for p in self.profiles:
            if key == p.name or key == p.id:
                return p
        return None


@attrs.frozen
class ComputeInstance:
    """A compute instance (one MIG device) inside a GPU instance."""

    id: int
    profile_id: int
    profile: str  # canonical name, "1c.3g.40gb" or "3g.40gb"
    start: int  # compute slices inside the GPU instance
    size: int
    uuid: str = ""  # "MIG-..."
    memory_mib: int = 0  # as the MIG device reports it
    multiprocessors: int = 0
    # The MIG device's share of the GPU instance's engines, from nvmlDeviceGetAttributes:
    copy_engines: int = 0
    decoders: int = 0
    encoders: int = 0
    jpegs: int = 0
    ofas: int = 0
    pids: tuple[int, ...] = ()  # processes running on it, as far as the driver tells

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


@attrs.frozen
class GpuInstance:
    """A GPU instance at a placement in memory slices, with its compute instances."""

    id: int
    profile_id: int
    profile: str  # canonical GI profile name, "3g.40gb"
    start: int  # memory slices
    size: int
    compute_instances: tuple[ComputeInstance, ...] = ()
    in_use: bool = False  # a process holds it or one of its compute instances

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


@attrs.frozen
class GpuState:
    """One physical GPU as read in a snapshot."""

    index: int  # NVML index
    uuid: str
    name: str
    pci_device_id: int
    pci_subsystem_id: int
    bus_id: str
    memory_mib: int
    architecture: int
    mig_capable: bool
    mig_mode: int  # current: 0 disabled, 1 enabled
    pending_mig_mode: int
    profiles: tuple[Profile, ...] = ()
    gpu_instances: tuple[GpuInstance, ...] = ()
    model_name: str = ""  # bundled model this GPU matches, "" if none
    # Reads that failed, each naming the NVML call, what it was for and the error
    # ("nvmlDeviceGetComputeRunningProcesses_v3 (MIG device 2): NOT_SUPPORTED"). A fact behind a
    # failed read is unknown, and an unknown is never "fine": a GPU with any is neither changed
    # nor reported as matching.
    unknown: tuple[str, ...] = ()

    @property
    def mig_enabled(self) -> bool:
        return self.mig_mode == MIG_ENABLED

    @property
    def mode_change_pending(self) -> bool:
        return self.mig_mode != self.pending_mig_mode

    def profile(self, key: str | int) -> Profile:
        return self.as_model().profile(key)

    def device_counts(self) -> ProfileCounts:
        """MIG devices by canonical profile name (see :func:`device_counts`); none while MIG is
        disabled."""
        return device_counts(self.gpu_instances) if self.mig_enabled else ProfileCounts()

    def orphan_instances(self) -> tuple[GpuInstance, ...]:
        """GPU instances without compute instances: no MIG device, so invisible to
        nvidia-mig-parted, which therefore never clears them."""
        return tuple(gi for gi in self.gpu_instances if not gi.compute_instances)

    def as_model(self) -> GpuModel:
        """This GPU's geometry as a :class:`GpuModel`, for the solver."""
        return GpuModel(
            name=self.model_name or self.name,
            product_name=self.name,
            pci_device_id=self.pci_device_id,
            pci_subsystem_id=self.pci_subsystem_id,
            memory_mib=self.memory_mib,
            architecture=self.architecture,
            mig_capable=self.mig_capable,
            memory_slices=max((p.end for pr in self.profiles for p in pr.placements), default=0),
            max_mig_devices=max((pr.instance_count for pr in self.profiles), default=0),
            profiles=self.profiles,
        )


def device_counts(instances: Iterable[GpuInstance]) -> ProfileCounts:
    """MIG devices by canonical profile name, as a config's ``mig-devices`` says them.

    Each compute instance counts once under its own profile: a CI covering its whole GPU
    instance under the GI's name (``3g.40gb``), a smaller one as ``1c.3g.40gb``. A GPU
    instance without compute instances contributes nothing (it is no MIG device).
    """
    return ProfileCounts((canonical_from_nvml(ci.profile), 1) for gi in instances for ci in gi.compute_instances)
