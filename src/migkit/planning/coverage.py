"""Coverage: which entry of a selected config governs which GPU of a node.

Pure: works from anything with PCI ids and a MIG flag (``GpuModel`` or ``GpuState``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import attrs

from migkit.config.filters import filters_match
from migkit.config.parse import ConfigEntry
from migkit.errors import ConfigError

__all__ = ["Coverage", "GpuCoverage", "GpuIds", "effective_specs"]


class GpuIds(Protocol):
    """What coverage needs to know about a GPU (``GpuModel`` and ``GpuState`` both fit)."""

    @property
    def pci_device_id(self) -> int: ...

    @property
    def pci_subsystem_id(self) -> int: ...

    @property
    def mig_capable(self) -> bool: ...


CoverageStatus = Literal["covered", "not covered", "skipped"]


@attrs.frozen
class GpuCoverage:
    """Which entry governs GPU ``index``.

    ``status`` is ``"covered"`` (``entry`` is the effective spec), ``"not covered"`` (no entry
    covers it: it is left untouched) or ``"skipped"`` (not MIG-capable, reached only through
    ``devices: all`` by an entry that wants MIG enabled: left untouched). ``covering`` lists
    every entry index that covers the GPU, in list order.
    """

    index: int
    status: CoverageStatus
    entry: ConfigEntry | None = None
    entry_index: int | None = None
    covering: tuple[int, ...] = ()

    @property
    def covered(self) -> bool:
        return self.status == "covered"


@attrs.frozen
class Coverage:
    """The effective spec of every GPU, plus warnings about the config as applied here."""

    gpus: tuple[GpuCoverage, ...]
    warnings: tuple[str, ...] = ()


def _entry_covers(entry: ConfigEntry, index: int, gpu: GpuIds) -> bool:
    if entry.devices != "all" and index not in entry.devices:
        return False
    return filters_match(entry.device_filters, gpu.pci_device_id, gpu.pci_subsystem_id)


def effective_specs(
    entries: Sequence[ConfigEntry],
    gpus: Sequence[GpuIds],
    *,
    strict_coverage: bool = False,
) -> Coverage:
    """Decide which entry of a selected config governs each GPU.

    ``gpus`` is the node's GPU list in PCI order; a GPU's position in it is the index that
    ``devices: [i]`` refers to. The rule:

    - An entry covers GPU ``i`` when its ``device-filter`` matches the GPU's PCI IDs (an absent
      or empty filter matches every GPU) and its ``devices`` is ``all`` or lists ``i``.
    - The **last** covering entry, in list order, is the GPU's effective spec. This is what
      mig-parted leaves on the hardware, so "``devices: all`` first, then an override for
      ``devices: [0]``" keeps its meaning; migkit applies each GPU once, from that spec, and
      warns when two covering entries ask for different things.
    - A GPU no entry covers is **not covered**: it is left untouched (no mode change, no
      clearing, no reset) and does not make ``assert`` fail.
    - A GPU that cannot do MIG is left untouched when its spec says ``mig-enabled: false``, and
      also when it is reached only through ``devices: all`` by an entry that wants MIG enabled
      (status ``"skipped"``). Listing it by index in an entry that wants MIG enabled is an
      error (``ConfigError``).
    - An index in ``devices`` that is not on this node is a warning, or an error
      (``ConfigError``) when ``strict_coverage`` is set.
    - An entry that covers no GPU of this node is a warning (an error with
      ``strict_coverage``): one that lists indices, all on the node, whose ``device-filter``
      matches none of them; and one whose ``device-filter`` matches no GPU of the node when
      no entry of the config covers any GPU here (the whole config would do nothing). An
      entry filtered to another model beside one that covers this node is normal (NVIDIA's
      own config has one entry per model) and says nothing.
    """
    warnings: list[str] = []
    results: list[GpuCoverage] = []
    for index, gpu in enumerate(gpus):
        covering = tuple(k for k, entry in enumerate(entries) if _entry_covers(entry, index, gpu))
        if not covering:
            results.append(GpuCoverage(index, "not covered"))
            continue
        last = covering[-1]
        entry = entries[last]
        differing = [k for k in covering[:-1] if not entries[k].same_spec(entry)]
        if differing:
            earlier = ", ".join(str(k) for k in differing)
            warnings.append(
                f"GPU {index} is covered by entries {earlier} and {last} with different specs; "
                f"entry {last} (the last) applies"
            )
        if not gpu.mig_capable and entry.mig_enabled:
            if entry.devices != "all":
                raise ConfigError(
                    f"GPU {index} does not support MIG, but entry {last} lists it explicitly "
                    f"with mig-enabled: true",
                    file=entry.file,
                    line=entry.line,
                    column=entry.column,
                )
            results.append(GpuCoverage(index, "skipped", entry, last, covering))
            continue
        results.append(GpuCoverage(index, "covered", entry, last, covering))
    covers_any = any(r.status != "not covered" for r in results)
    for k, entry in enumerate(entries):
        idle = not any(_entry_covers(entry, i, gpu) for i, gpu in enumerate(gpus))
        if entry.devices == "all":
            if idle and not covers_any and entry.device_filters:
                _coverage_problem(
                    warnings,
                    entry,
                    f"entry {k}: its device-filter ({_filters_text(entry)}) matches no GPU of "
                    f"this node ({_ids_text(gpus)}), and no entry covers any GPU here: "
                    "the config would change nothing",
                    strict_coverage,
                )
            continue
        missing = [i for i in entry.devices if i >= len(gpus)]
        if not missing:
            if idle:
                listed = ", ".join(str(i) for i in entry.devices)
                _coverage_problem(
                    warnings,
                    entry,
                    f"entry {k} covers no GPU of this node: its device-filter "
                    f"({_filters_text(entry)}) matches none of GPU {listed} ({_ids_text(gpus)})",
                    strict_coverage,
                )
            continue
        listed = ", ".join(str(i) for i in missing)
        if not gpus:
            have = "no GPUs"
        elif len(gpus) == 1:
            have = "1 GPU (index 0)"
        else:
            have = f"{len(gpus)} GPUs (indices 0-{len(gpus) - 1})"
        noun = "index" if len(missing) == 1 else "indices"
        message = f"entry {k} lists GPU {noun} {listed}, but this node has {have}"
        if strict_coverage:
            raise ConfigError(message, file=entry.file, line=entry.line, column=entry.column)
        warnings.append(message)
    return Coverage(tuple(results), tuple(warnings))


def _coverage_problem(
    warnings: list[str], entry: ConfigEntry, message: str, strict_coverage: bool
) -> None:
    if strict_coverage:
        raise ConfigError(message, file=entry.file, line=entry.line, column=entry.column)
    warnings.append(message)


def _filters_text(entry: ConfigEntry) -> str:
    return ", ".join(str(f) for f in entry.device_filters)


def _ids_text(gpus: Sequence[GpuIds]) -> str:
    if not gpus:
        return "it has no GPUs"
    ids = sorted({f"0x{g.pci_device_id:08X}" for g in gpus})
    return "its GPUs are " + ", ".join(ids)
