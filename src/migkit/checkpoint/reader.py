"""Reading checkpoint files of both formats, validated field by field before anything changes."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from migkit.checkpoint.values import (
    FORMAT_VERSION,
    MAX_BYTES,
    MAX_DEPTH,
    MAX_GPUS,
    MAX_INSTANCES,
    Checkpoint,
    SavedComputeInstance,
    SavedGpu,
    SavedGpuInstance,
)
from migkit.errors import ConfigError
from migkit.models import Profile

# --------------------------------------------------------------------------- reading


def read(path: str) -> Checkpoint:
    """Read and validate a checkpoint file (either format); raises ConfigError naming it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ConfigError("no such file", file=path) from None
    except OSError as err:
        raise ConfigError(f"cannot read the file: {err.strerror}", file=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError("not a regular file", file=path)
    if info.st_size > MAX_BYTES:
        raise ConfigError(f"the file is larger than {MAX_BYTES} bytes", file=path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"cannot read the file: {err.strerror}", file=path) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"the file is larger than {MAX_BYTES} bytes", file=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"the file is not UTF-8 text ({err.reason})", file=path) from None
    return load(text, file=path)


def _depth(text: str) -> int:
    """The deepest bracket nesting of JSON text, outside strings."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load(text: str, *, file: str | None = None) -> Checkpoint:
    """Parse and validate checkpoint text (either format); malformed content raises ConfigError.

    A migkit-format file that names its GPU models is checked against the bundled tables
    here; a mig-parted file comes back unresolved (see :func:`for_node`).
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(f"the checkpoint is larger than {MAX_BYTES} bytes", file=file)
    if _depth(text) > MAX_DEPTH:
        raise ConfigError(f"the JSON nests deeper than {MAX_DEPTH} levels", file=file)
    try:
        document = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"not a checkpoint: {err.msg}", file=file, line=err.lineno, column=err.colno
        ) from None
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"not a checkpoint: {err}", file=file) from None
    reader = _Reader(file)
    if isinstance(document, dict) and ("MigState" in document or "Version" in document):
        return reader.mig_parted(document)
    return reader.migkit(document)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a checkpoint can hold")


class _Placed(Protocol):
    """A saved instance's placement."""

    @property
    def start(self) -> int: ...

    @property
    def size(self) -> int: ...


class _Reader:
    """Validates a decoded JSON document field by field, naming each field in errors."""

    def __init__(self, file: str | None) -> None:
        self.file = file

    def error(self, field: str, reason: str) -> ConfigError:
        return ConfigError(f"{field}: {reason}" if field else reason, file=self.file)

    def mapping(
        self, value: Any, field: str, required: Iterable[str], optional: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(field, f"must be an object, not {_describe(value)}")
        required, optional = tuple(required), tuple(optional)
        for key in value:
            if key not in required and key not in optional:
                allowed = ", ".join((*required, *optional))
                raise self.error(field, f"unexpected key {json.dumps(key)} (expected {allowed})")
        for key in required:
            if key not in value:
                raise self.error(field, f"{key} is missing")
        return value

    def list_of(self, value: Any, field: str, limit: int, *, nullable: bool = False) -> list[Any]:
        if value is None and nullable:
            return []
        if not isinstance(value, list):
            raise self.error(field, f"must be a list, not {_describe(value)}")
        if len(value) > limit:
            raise self.error(field, f"has {len(value)} items; at most {limit} are possible")
        return value

    def integer(self, value: Any, field: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(field, f"must be a whole number, not {_describe(value)}")
        if value < minimum:
            what = "negative" if minimum == 0 else f"less than {minimum}"
            raise self.error(field, f"{value} is {what}")
        if value >= 1 << 31:
            raise self.error(field, f"{value} is out of range")
        return value

    def boolean(self, value: Any, field: str) -> bool:
        if not isinstance(value, bool):
            raise self.error(field, f"must be true or false, not {_describe(value)}")
        return value

    def string(self, value: Any, field: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(field, f"must be a non-empty string, not {_describe(value)}")
        return value

    # -- migkit's format ---------------------------------------------------------------

    def migkit(self, document: Any) -> Checkpoint:
        top = self.mapping(document, "", ("version", "gpus"))
        if top["version"] != FORMAT_VERSION:
            raise self.error(
                "version", f"{json.dumps(top['version'])} is not supported (expected \"v1\")"
            )
        gpus = []
        for k, raw in enumerate(self.list_of(top["gpus"], "gpus", MAX_GPUS)):
            where = f"gpus[{k}]"
            entry = self.mapping(
                raw, where, ("uuid", "mig_enabled"), ("index", "model", "gpu_instances")
            )
            enabled = self.boolean(entry["mig_enabled"], f"{where}.mig_enabled")
            gis = []
            raw_gis = self.list_of(
                entry.get("gpu_instances", []), f"{where}.gpu_instances", MAX_INSTANCES
            )
            for j, raw_gi in enumerate(raw_gis):
                gi_where = f"{where}.gpu_instances[{j}]"
                gi = self.mapping(
                    raw_gi, gi_where, ("profile_id", "start", "size"), ("compute_instances",)
                )
                cis = []
                raw_cis = self.list_of(
                    gi.get("compute_instances", []),
                    f"{gi_where}.compute_instances",
                    MAX_INSTANCES,
                )
                for i, raw_ci in enumerate(raw_cis):
                    ci_where = f"{gi_where}.compute_instances[{i}]"
                    ci = self.mapping(raw_ci, ci_where, ("profile_id", "start", "size"))
                    cis.append(
                        SavedComputeInstance(
                            self.integer(ci["profile_id"], f"{ci_where}.profile_id", 0),
                            self.integer(ci["start"], f"{ci_where}.start", 0),
                            self.integer(ci["size"], f"{ci_where}.size", 1),
                        )
                    )
                gis.append(
                    SavedGpuInstance(
                        self.integer(gi["profile_id"], f"{gi_where}.profile_id", 0),
                        self.integer(gi["start"], f"{gi_where}.start", 0),
                        self.integer(gi["size"], f"{gi_where}.size", 1),
                        tuple(cis),
                    )
                )
            if gis and not enabled:
                raise self.error(
                    f"{where}.gpu_instances", "must be empty when mig_enabled is false"
                )
            model = entry.get("model", "")
            if model != "":
                model = self.string(model, f"{where}.model")
            gpus.append(
                SavedGpu(
                    self.string(entry["uuid"], f"{where}.uuid"),
                    self.integer(entry.get("index", 0), f"{where}.index", 0),
                    enabled,
                    tuple(gis),
                    model,
                )
            )
        checkpoint = Checkpoint(tuple(gpus))
        self.unique_uuids(checkpoint)
        for k, gpu in enumerate(checkpoint.gpus):
            self.no_overlaps(gpu, f"gpus[{k}]")
            if gpu.model:
                from migkit.errors import UnknownModelError
                from migkit.hardware import gpu_model

                try:
                    profiles = gpu_model(gpu.model).profiles
                except UnknownModelError:
                    raise self.error(
                        f"gpus[{k}].model", f"{json.dumps(gpu.model)} is not a known GPU model"
                    ) from None
                self.against_tables(gpu, f"gpus[{k}]", profiles)
        return checkpoint

    def unique_uuids(self, checkpoint: Checkpoint, field: str = "gpus", key: str = "uuid") -> None:
        """Refuse a GPU listed twice (``gpus[k].uuid``, or upstream's ``Devices[k].UUID``)."""
        seen: dict[str, int] = {}
        for k, gpu in enumerate(checkpoint.gpus):
            if gpu.uuid in seen:
                short = field.rpartition(".")[2]
                raise self.error(f"{field}[{k}].{key}", f"{gpu.uuid} is also {short}[{seen[gpu.uuid]}]")
            seen[gpu.uuid] = k

    def _overlap(
        self, items: Sequence[_Placed], where: str, field: str
    ) -> None:
        """Refuse two of ``items`` (instances at ``start:size``) sharing a slice."""
        for j, item in enumerate(items):
            for other_j in range(j):
                other = items[other_j]
                if item.start < other.start + other.size and other.start < item.start + item.size:
                    raise self.error(
                        f"{where}.{field}[{j}]",
                        f"placement {item.start}:{item.size} overlaps {field}[{other_j}] "
                        f"at {other.start}:{other.size}",
                    )

    def no_overlaps(self, gpu: SavedGpu, where: str) -> None:
        self._overlap(gpu.gpu_instances, where, "gpu_instances")
        for j, gi in enumerate(gpu.gpu_instances):
            self._overlap(gi.compute_instances, f"{where}.gpu_instances[{j}]", "compute_instances")

    def against_tables(
        self, gpu: SavedGpu, where: str, profiles: Sequence[Profile], *, upstream: bool = False
    ) -> None:
        gi_key, ci_key = (
            ("GpuInstances", "ComputeInstances") if upstream else ("gpu_instances", "compute_instances")
        )
        by_id = {profile.id: profile for profile in profiles}
        for j, gi in enumerate(gpu.gpu_instances):
            gi_where = f"{where}.{gi_key}[{j}]"
            profile = by_id.get(gi.profile_id)
            if profile is None:
                known = ", ".join(f"{p.id} ({p.name})" for p in profiles)
                raise self.error(
                    f"{gi_where}.profile_id",
                    f"{gi.profile_id} is not a GPU-instance profile of this GPU (it has {known})",
                )
            if (gi.start, gi.size) not in {(p.start, p.size) for p in profile.placements}:
                allowed = ", ".join(str(p) for p in profile.placements)
                raise self.error(
                    gi_where,
                    f"{profile.name} cannot be placed at {gi.start}:{gi.size} "
                    f"(its placements are {allowed})",
                )
            for i, ci in enumerate(gi.compute_instances):
                ci_where = f"{gi_where}.{ci_key}[{i}]"
                compute = next((c for c in profile.compute_profiles if c.id == ci.profile_id), None)
                if compute is None:
                    known = ", ".join(f"{c.id} ({c.name})" for c in profile.compute_profiles)
                    raise self.error(
                        f"{ci_where}.profile_id",
                        f"{ci.profile_id} is not a compute-instance profile of {profile.name} "
                        f"(it has {known})",
                    )
                if ci.size != compute.slice_count or ci.start + ci.size > profile.slice_count:
                    raise self.error(
                        ci_where,
                        f"{compute.name} cannot be placed at {ci.start}:{ci.size} in a "
                        f"{profile.name} GPU instance",
                    )
                if compute.placements and (ci.start, ci.size) not in {
                    (p.start, p.size) for p in compute.placements
                }:
                    allowed = ", ".join(str(p) for p in compute.placements)
                    raise self.error(
                        ci_where,
                        f"{compute.name} cannot be placed at {ci.start}:{ci.size} "
                        f"(its placements are {allowed})",
                    )

    # -- mig-parted's format -------------------------------------------------------------

    def mig_parted(self, document: Any) -> Checkpoint:
        top = self.mapping(document, "", ("Version", "MigState"))
        if top["Version"] != FORMAT_VERSION:
            raise self.error(
                "Version", f"{json.dumps(top['Version'])} is not supported (expected \"v1\")"
            )
        state = self.mapping(top["MigState"], "MigState", ("Devices",))
        gpus = []
        for k, raw in enumerate(self.list_of(state["Devices"], "MigState.Devices", MAX_GPUS)):
            where = f"MigState.Devices[{k}]"
            device = self.mapping(raw, where, ("UUID", "MigMode"), ("GpuInstances",))
            mode = self.integer(device["MigMode"], f"{where}.MigMode", 0)
            if mode not in (0, 1):
                raise self.error(f"{where}.MigMode", f"{mode} is not 0 (disabled) or 1 (enabled)")
            gis = []
            raw_gis = self.list_of(
                device.get("GpuInstances"), f"{where}.GpuInstances", MAX_INSTANCES, nullable=True
            )
            for j, raw_gi in enumerate(raw_gis):
                gi_where = f"{where}.GpuInstances[{j}]"
                gi = self.mapping(raw_gi, gi_where, ("ProfileID", "Placement"), ("ComputeInstances",))
                placement = self.mapping(
                    gi["Placement"], f"{gi_where}.Placement", ("Start", "Size")
                )
                cis = []
                raw_cis = self.list_of(
                    gi.get("ComputeInstances"),
                    f"{gi_where}.ComputeInstances",
                    MAX_INSTANCES,
                    nullable=True,
                )
                for i, raw_ci in enumerate(raw_cis):
                    ci_where = f"{gi_where}.ComputeInstances[{i}]"
                    ci = self.mapping(raw_ci, ci_where, ("ProfileID",), ("EngProfileID",))
                    engine = self.integer(ci.get("EngProfileID", 0), f"{ci_where}.EngProfileID", 0)
                    if engine != 0:
                        raise self.error(
                            f"{ci_where}.EngProfileID",
                            f"{engine} is not supported (only 0, the shared engine profile)",
                        )
                    # Index now; start and size are chosen against the node (for_node).
                    cis.append(
                        SavedComputeInstance(
                            self.integer(ci["ProfileID"], f"{ci_where}.ProfileID", 0), 0, 1
                        )
                    )
                gis.append(
                    SavedGpuInstance(
                        self.integer(gi["ProfileID"], f"{gi_where}.ProfileID", 0),
                        self.integer(placement["Start"], f"{gi_where}.Placement.Start", 0),
                        self.integer(placement["Size"], f"{gi_where}.Placement.Size", 1),
                        tuple(cis),
                    )
                )
            if gis and mode == 0:
                raise self.error(f"{where}.GpuInstances", "must be empty when MigMode is 0")
            gpus.append(
                SavedGpu(self.string(device["UUID"], f"{where}.UUID"), k, mode == 1, tuple(gis))
            )
        checkpoint = Checkpoint(tuple(gpus), format="mig-parted", resolved=False)
        self.unique_uuids(checkpoint, "MigState.Devices", "UUID")
        for k, gpu in enumerate(checkpoint.gpus):
            self.no_overlaps_upstream(gpu, f"MigState.Devices[{k}]")
        return checkpoint

    def no_overlaps_upstream(self, gpu: SavedGpu, where: str) -> None:
        self._overlap(gpu.gpu_instances, where, "GpuInstances")

    def resolve_upstream(
        self, gpu: SavedGpu, k: int, profiles: Sequence[Profile], index: int
    ) -> SavedGpu:
        """Profile indices to IDs, and compute-instance placements chosen left to right."""
        where = f"MigState.Devices[{k}]"
        by_index = {profile.index: profile for profile in profiles}
        instances = []
        for j, gi in enumerate(gpu.gpu_instances):
            gi_where = f"{where}.GpuInstances[{j}]"
            profile = by_index.get(gi.profile_id)
            if profile is None:
                known = ", ".join(f"{p.index} ({p.name})" for p in profiles)
                raise self.error(
                    f"{gi_where}.ProfileID",
                    f"{gi.profile_id} is not a GPU-instance profile index of this GPU "
                    f"(it has {known})",
                )
            used: list[tuple[int, int]] = []
            cis = []
            for i, ci in enumerate(gi.compute_instances):
                ci_where = f"{gi_where}.ComputeInstances[{i}]"
                compute = next(
                    (c for c in profile.compute_profiles if c.index == ci.profile_id), None
                )
                if compute is None:
                    known = ", ".join(f"{c.index} ({c.name})" for c in profile.compute_profiles)
                    raise self.error(
                        f"{ci_where}.ProfileID",
                        f"{ci.profile_id} is not a compute-instance profile index of "
                        f"{profile.name} (it has {known})",
                    )
                candidates = sorted(
                    (p.start, p.size) for p in compute.placements
                ) or [(s, compute.slice_count) for s in range(profile.slice_count)]
                spot = next(
                    (
                        (start, size)
                        for start, size in candidates
                        if start + size <= profile.slice_count
                        and not any(start < s + z and s < start + size for s, z in used)
                    ),
                    None,
                )
                if spot is None:
                    raise self.error(
                        ci_where, f"no room left for {compute.name} in this {profile.name} instance"
                    )
                used.append(spot)
                cis.append(SavedComputeInstance(compute.id, spot[0], spot[1]))
            instances.append(SavedGpuInstance(profile.id, gi.start, gi.size, tuple(cis)))
        return attrs.evolve(gpu, index=index, gpu_instances=tuple(instances))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
