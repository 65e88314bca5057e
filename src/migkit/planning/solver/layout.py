"""The solver's results (a ``Layout`` of placed GPU and compute instances) and the phrases
its explanations use for slices and instances."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from migkit.models import GpuInstance, Placement
from migkit.names import ProfileCounts

# ----------------------------------------------------------------------------- result types


@attrs.frozen
class PlacedCompute:
    """A compute instance at a placement in compute slices inside its GPU instance."""

    profile: str  # canonical CI name, "1c.3g.40gb" or "3g.40gb"
    profile_id: int
    start: int
    size: int
    kept: bool = False
    existing_id: int | None = None

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)


@attrs.frozen
class PlacedInstance:
    """A GPU instance at a placement in memory slices, with its compute instances.

    ``kept`` is True for an existing GI left in place (``existing_id`` is its GI id); its
    ``compute_instances`` then hold the kept CIs (``kept=True``) and any to add.
    """

    profile: str  # canonical GI profile name
    start: int
    size: int
    profile_id: int
    compute_instances: tuple[PlacedCompute, ...] = ()
    kept: bool = False
    existing_id: int | None = None

    @property
    def placement(self) -> Placement:
        return Placement(self.start, self.size)

    @property
    def mask(self) -> int:
        return self.placement.mask

    @property
    def new_compute_instances(self) -> tuple[PlacedCompute, ...]:
        return tuple(ci for ci in self.compute_instances if not ci.kept)


@attrs.frozen
class Layout:
    """A complete target layout for one GPU.

    ``instances`` are ordered by start. ``dropped`` lists the existing GIs that are not kept
    (they have to be destroyed first).
    """

    model: str
    instances: tuple[PlacedInstance, ...]
    dropped: tuple[GpuInstance, ...] = ()

    @property
    def counts(self) -> ProfileCounts:
        """Compute-instance counts by canonical name (what a config's mig-devices says)."""
        return ProfileCounts(
            (ci.profile, 1) for gi in self.instances for ci in gi.compute_instances
        )

    @property
    def kept(self) -> tuple[PlacedInstance, ...]:
        return tuple(gi for gi in self.instances if gi.kept)

    @property
    def created(self) -> tuple[PlacedInstance, ...]:
        return tuple(gi for gi in self.instances if not gi.kept)

    @property
    def occupied_mask(self) -> int:
        mask = 0
        for gi in self.instances:
            mask |= gi.mask
        return mask

    def describe(self) -> str:
        """One line per GI, ``3g.40gb at 4:4 [3g.40gb at 0:3]``."""
        lines = []
        for gi in self.instances:
            cis = ", ".join(f"{ci.profile} at {ci.start}:{ci.size}" for ci in gi.compute_instances)
            keep = " (kept)" if gi.kept else ""
            lines.append(f"{gi.profile} at {gi.start}:{gi.size}{keep} [{cis}]")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- formatting


def describe_slices(mask: int) -> str:
    """``0b11110011`` -> ``"0-1, 4-7"``."""
    runs: list[str] = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            start = bit
            while mask >> (bit + 1) & 1:
                bit += 1
            runs.append(str(start) if start == bit else f"{start}-{bit}")
        bit += 1
    return ", ".join(runs)


def slices_phrase(mask: int, kind: str = "memory") -> str:
    """``"memory slice 6"`` or ``"memory slices 0-3"``."""
    noun = f"{kind} slice" if popcount(mask) == 1 else f"{kind} slices"
    return f"{noun} {describe_slices(mask)}"


def in_use_by(gi: GpuInstance) -> str:
    """``" by PID 4242"`` or ``" by PIDs 17, 4242"`` for an in-use GI; ``""`` when no PIDs are
    known (the driver can report a process count without them)."""
    pids = sorted({pid for ci in gi.compute_instances for pid in ci.pids})
    if not pids:
        return ""
    return f" by PID{'s' if len(pids) > 1 else ''} {', '.join(str(pid) for pid in pids)}"


def describe_starts(starts: Sequence[int]) -> str:
    if not starts:
        return "nowhere"
    if len(starts) > 2 and list(starts) == list(range(starts[0], starts[-1] + 1)):
        return f"{starts[0]}-{starts[-1]}"
    return ", ".join(str(s) for s in starts)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def popcount(mask: int) -> int:
    return bin(mask).count("1")
