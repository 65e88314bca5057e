"""Bundled MIG hardware tables (``migkit/data/*.json``) as :class:`GpuModel` values.

The tables restate public observations of real GPUs (see each file's ``sources``); every
profile carries ``mark`` / ``placements_mark`` saying whether its values were observed on
hardware, derived by a stated rule, or inferred, and where a table borrows another table's
shape its ``source`` says which. At the model level ``identity_mark`` grades the product name,
PCI ids and total memory, and ``observed_on`` names the driver on which the whole table was
read from a real GPU (see :func:`provenance`). Compute-instance profiles are not listed in
the files: they follow the per-GI-size rule observed with ``nvidia-smi mig -lcip`` (see
:func:`compute_profiles_for`), marked ``inferred`` where no real output exists.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import attrs

from migkit.errors import UnknownModelError
from migkit.models import ARCH_HOPPER, ComputeProfile, EngineCounts, GpuModel, GpuState, Placement, Profile
from migkit.names import canonical_from_nvml

# Compute-instance profiles by GI compute-slice count G: (CI profile id/index, C, instances,
# starts). CI profile IDs equal their indices on every observed part. 2c/3c placements inside
# 3g and 7g GIs are known only from a mock, so they are inferred.
_CI_RULES: dict[int, tuple[tuple[int, int, int, tuple[int, ...]], ...]] = {
    1: ((0, 1, 1, (0,)),),
    2: ((1, 2, 1, (0,)), (0, 1, 2, (0, 1))),
    3: ((2, 3, 1, (0,)), (1, 2, 1, (0,)), (0, 1, 3, (0, 1, 2))),
    4: ((3, 4, 1, (0,)), (1, 2, 2, (0, 2)), (0, 1, 4, (0, 1, 2, 3))),
    7: (
        (4, 7, 1, (0,)),
        (3, 4, 1, (0,)),
        (2, 3, 2, (0, 4)),
        (1, 2, 3, (0, 2, 4)),
        (0, 1, 7, tuple(range(7))),
    ),
}
_CI_REV1 = 7  # CI 1_SLICE_REV1: the full-SM CI of a 1g GI with twice the memory (Hopper+)


def _engines(profile: Profile) -> EngineCounts:
    """A GPU instance's copy and media engines, which each of its compute instances shares."""
    return {
        "copy_engines": profile.copy_engines,
        "decoders": profile.decoders,
        "encoders": profile.encoders,
        "jpegs": profile.jpegs,
        "ofas": profile.ofas,
    }


def compute_profiles_for(profile: Profile, architecture: int, base_1g_sms: int) -> tuple[ComputeProfile, ...]:
    """The compute-instance profiles of GIs of ``profile``, the GI-covering one first."""
    g = profile.slice_count
    rules = _CI_RULES.get(g, ((0, g, 1, (0,)),) if g else ())
    out: list[ComputeProfile] = []
    observed_full = True
    for ci_id, c, count, starts in rules:
        full = c == g
        name = profile.name if full else f"{c}c.{profile.name}"
        out.append(
            ComputeProfile(
                id=ci_id,
                index=ci_id,
                name=name,
                slice_count=c,
                instance_count=count,
                multiprocessors=profile.multiprocessors * c // g,
                placements=tuple(Placement(s, c) for s in starts),
                nvml_name=f"MIG {name}",
                **_engines(profile),
                mark="observed" if (full and observed_full) or g in (1, 2) else "inferred",
            )
        )
    if g == 1 and profile.memory_slices == 2 and architecture >= ARCH_HOPPER:
        # Hopper+: the 2x-memory 1g GI offers CI 7 with all its SMs (the default) and CI 0
        # with the SMs of a plain 1g (observed on GH200).
        rev1 = ComputeProfile(
            id=_CI_REV1,
            index=_CI_REV1,
            name=profile.name,
            slice_count=1,
            instance_count=1,
            multiprocessors=profile.multiprocessors,
            placements=(Placement(0, 1),),
            nvml_name=f"MIG {profile.name}",
            **_engines(profile),
        )
        plain = out[0]
        out = [rev1, ComputeProfile(**{**_fields(plain), "multiprocessors": base_1g_sms})]
    return tuple(out)


def _fields(cp: ComputeProfile) -> dict[str, Any]:
    return attrs.asdict(cp, recurse=False)


MARKS = ("observed", "derived", "inferred")
"""How a bundled value is known: read from a real GPU, computed by a stated rule, or assumed."""


@attrs.frozen
class TableProvenance:
    """Where a bundled table's values come from, beyond the per-profile marks."""

    model: str
    identity_mark: str  # product name, PCI device/subsystem ids and total memory
    observed_on: str  # driver the whole table was read on from a real GPU; "" if none
    sources: tuple[str, ...]
    notes: str
    profile_sources: tuple[tuple[int, str], ...]  # (profile id, source) where a row names one

    @property
    def observed(self) -> bool:
        """True when every value of the table was read from a real GPU."""
        return bool(self.observed_on) and self.identity_mark == "observed"


def _check_table(data: dict[str, Any]) -> None:
    """Fail closed on a table that contradicts itself (a packaging error, not a user one)."""
    name = data.get("name", "?")
    problems: list[str] = []
    if data.get("identity_mark", "inferred") not in MARKS:
        problems.append(f"identity_mark {data.get('identity_mark')!r}")
    slices = data["memory_slices"]
    for row in data["profiles"]:
        where = f"profile {row['id']}"
        for key in ("mark", "placements_mark"):
            if row.get(key, "observed") not in MARKS:
                problems.append(f"{where}: {key} {row.get(key)!r}")
        starts = [s for s, _ in row["placements"]]
        if any(n != row["memory_slices"] for _, n in row["placements"]):
            problems.append(f"{where}: placement sizes differ from memory_slices")
        if any(s < 0 or s + row["memory_slices"] > slices for s in starts):
            problems.append(f"{where}: a placement lies outside the {slices} memory slices")
        if not 1 <= row["instances"] <= len(starts):
            problems.append(f"{where}: {row['instances']} instances for {len(starts)} placements")
        if not 1 <= row["slices"] <= data["max_mig_devices"]:
            problems.append(f"{where}: {row['slices']} compute slices")
    ids = [row["id"] for row in data["profiles"]]
    indices = [row["index"] for row in data["profiles"]]
    if len(set(ids)) != len(ids) or len(set(indices)) != len(indices):
        problems.append("profile ids or indices repeat")
    if problems:
        raise ValueError(f"bundled table {name} is inconsistent: " + "; ".join(problems))


def _profile_from_json(row: dict[str, Any]) -> Profile:
    return Profile(
        id=row["id"],
        index=row["index"],
        name=canonical_from_nvml(row["name"]),
        nvml_name=row["name"],
        slice_count=row["slices"],
        memory_slices=row["memory_slices"],
        instance_count=row["instances"],
        memory_mib=row["memory_mib"],
        multiprocessors=row["multiprocessors"],
        placements=tuple(Placement(s, n) for s, n in row["placements"]),
        copy_engines=row["copy_engines"],
        decoders=row["decoders"],
        encoders=row["encoders"],
        jpegs=row["jpegs"],
        ofas=row["ofas"],
        capabilities=row.get("capabilities", 0),
        device_memory_mib=row.get("device_memory_mib", row["memory_mib"]),
        mark=row.get("mark", "observed"),
        placements_mark=row.get("placements_mark", "observed"),
    )


def _model_from_json(data: dict[str, Any]) -> GpuModel:
    _check_table(data)
    profiles = sorted((_profile_from_json(r) for r in data["profiles"]), key=lambda p: p.sort_key)
    base_1g = next((p.multiprocessors for p in profiles if p.index == 0 and p.slice_count == 1), 0)
    profiles = [
        attrs.evolve(
            p,
            compute_profiles=compute_profiles_for(p, data["architecture"], base_1g or p.multiprocessors),
        )
        for p in profiles
    ]
    return GpuModel(
        name=data["name"],
        product_name=data["product_name"],
        pci_device_id=int(data["pci_device_id"], 16),
        pci_subsystem_id=int(data["pci_subsystem_id"], 16),
        memory_mib=data["memory_mib"],
        architecture=data["architecture"],
        mig_capable=data["mig_capable"],
        memory_slices=data["memory_slices"],
        max_mig_devices=data["max_mig_devices"],
        profiles=tuple(profiles),
        driver=data.get("driver", ""),
        sources=tuple(data.get("sources", ())),
    )


@functools.cache
def _raw_tables() -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for entry in resources.files("migkit.hardware").joinpath("data").iterdir():
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            tables[data["name"]] = data
    return tables


@functools.cache
def gpu_model(name: str) -> GpuModel:
    """The bundled hardware table called ``name``, e.g. ``gpu_model("h100-80gb")``."""
    tables = _raw_tables()
    if name not in tables:
        known = ", ".join(sorted(tables))
        raise UnknownModelError(f"no GPU model {name!r}; known models: {known}")
    return _model_from_json(tables[name])


@functools.cache
def provenance(name: str) -> TableProvenance:
    """How the bundled table ``name`` is known (see :data:`MARKS`)."""
    tables = _raw_tables()
    if name not in tables:
        gpu_model(name)  # raises UnknownModelError naming the known models
    data = tables[name]
    return TableProvenance(
        model=name,
        identity_mark=data.get("identity_mark", "inferred"),
        observed_on=data.get("observed_on", ""),
        sources=tuple(data.get("sources", ())),
        notes=data.get("notes", ""),
        profile_sources=tuple((row["id"], row["source"]) for row in data["profiles"] if "source" in row),
    )


def gpu_models() -> tuple[GpuModel, ...]:
    """Every bundled hardware table, sorted by name."""
    return tuple(gpu_model(name) for name in sorted(_raw_tables()))


def auto_placement_order(model_name: str, profile_id: int) -> tuple[int, ...]:
    """Starts the driver tries, in order, when creating a GI without a placement (inferred)."""
    for row in _raw_tables()[model_name]["profiles"]:
        if row["id"] == profile_id:
            return tuple(row.get("auto_placement_order", [s for s, _ in row["placements"]]))
    return ()


def model_for_pci_id(pci_device_id: int, memory_mib: int | None = None) -> GpuModel | None:
    """The bundled model with this packed PCI device id (closest total memory on ties)."""
    matches = [m for m in gpu_models() if m.pci_device_id == pci_device_id]
    if not matches:
        return None
    if memory_mib is None:
        return matches[0]
    return min(matches, key=lambda m: abs(m.memory_mib - memory_mib))


def planning_model(gpu: GpuState) -> GpuModel:
    """A live GPU's geometry for the solver, completed where NVML is silent.

    NVML reports compute-instance profiles only for GI profiles that have a live GPU instance
    (the query needs a GI handle), so the others are taken from the bundled table of the same
    GPU when its profile matches, else from the observed per-size rule (marked inferred).
    """
    model = gpu.as_model()
    bundled = model_for_pci_id(gpu.pci_device_id, gpu.memory_mib)
    base_1g = next((p.multiprocessors for p in model.profiles if p.index == 0), 0)
    profiles = []
    for p in model.profiles:
        if not p.compute_profiles:
            known = bundled.find_profile(p.id) if bundled is not None else None
            if known is not None and known.slice_count == p.slice_count:
                computes = known.compute_profiles
            else:
                computes = compute_profiles_for(p, gpu.architecture, base_1g or p.multiprocessors)
            p = attrs.evolve(p, compute_profiles=computes)
        profiles.append(p)
    return attrs.evolve(model, profiles=tuple(profiles), name=gpu.model_name or model.name)
