"""migkit: plan, apply and verify NVIDIA MIG layouts.

A Python library first (``import migkit``), with a CLI that is a drop-in for
``nvidia-mig-parted`` and a compiled NVML simulator so that everything runs without a GPU.

>>> import migkit
>>> layout = migkit.solve(migkit.gpu_model("a100-40gb"), {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2})
>>> [(i.profile, i.start) for i in layout.instances]
[('2g.10gb', 0), ('1g.5gb', 2), ('1g.5gb', 3), ('3g.20gb', 4)]

Names are resolved lazily, so ``import migkit`` stays cheap for command-line use.
"""

from __future__ import annotations

import importlib

# Not `from typing import ...`: importing typing would slow down every CLI start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "apply": "migkit.execution.orchestrate",
    "ApplyError": "migkit.errors",
    "ApplyReport": "migkit.execution.report",
    "assert_config": "migkit.execution.orchestrate",
    "AssertResult": "migkit.execution.report",
    "Checkpoint": "migkit.checkpoint",
    "CoverageStatus": "migkit.models",
    "GpuOutcome": "migkit.execution.report",
    "MigMode": "migkit.models",
    "NodeLike": "migkit.nvml.node",
    "Outcome": "migkit.models",
    "ResetFailed": "migkit.errors",
    "restore": "migkit.checkpoint",
    "canonical_name": "migkit.names",
    "ComputeInstance": "migkit.models",
    "ComputeProfile": "migkit.models",
    "ConfigEntry": "migkit.config",
    "ConfigError": "migkit.errors",
    "DeviceFilter": "migkit.config.filters",
    "gpu_model": "migkit.hardware",
    "gpu_models": "migkit.hardware",
    "GpuInstance": "migkit.models",
    "GpuModel": "migkit.models",
    "GpuPlan": "migkit.planning.plan",
    "GpuState": "migkit.models",
    "InfeasibleError": "migkit.errors",
    "InsufficientResources": "migkit.errors",
    "InUse": "migkit.errors",
    "Layout": "migkit.planning.solver",
    "load_config": "migkit.config",
    "MigConfigFile": "migkit.config",
    "MigkitError": "migkit.errors",
    "Node": "migkit.nvml.node",
    "NodePlan": "migkit.planning.plan",
    "NoPermission": "migkit.errors",
    "NotFound": "migkit.errors",
    "NotSupported": "migkit.errors",
    "NvmlError": "migkit.errors",
    "NvmlLibraryNotFound": "migkit.errors",
    "parse_profile_name": "migkit.names",
    "PlacedCompute": "migkit.planning.solver",
    "PlacedInstance": "migkit.planning.solver",
    "Placement": "migkit.models",
    "plan_node": "migkit.planning.plan",
    "plan_offline": "migkit.planning.plan",
    "Profile": "migkit.models",
    "ProfileName": "migkit.names",
    "ReadOnlyError": "migkit.errors",
    "render_plan": "migkit.planning.plan",
    "ResetRequired": "migkit.errors",
    "select": "migkit.config",
    "simulate": "migkit.simulator",
    "solve": "migkit.planning.solver",
    "UnknownModelError": "migkit.errors",
    "UnknownProfileError": "migkit.errors",
}
_SUBMODULES = frozenset({"simulator", "errors", "models", "hardware", "names"})

__all__ = sorted([*_EXPORTS, "__version__", "open_node"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"migkit.{name}")
    raise AttributeError(f"module 'migkit' has no attribute {name!r}")


def open_node(
    nvml_library: str | os.PathLike[str] | None = None,
    simulate: str | None = None,
    sim_state: str | os.PathLike[str] | None = None,
) -> Node:
    """Open the node's GPUs through libnvidia-ml, or a simulated node (see
    :func:`migkit.nvml.node.open_node`), with the bundled hardware tables to name each GPU's
    model and to tell a read that failed from a GPU without MIG."""
    from migkit.hardware import model_for_pci_id
    from migkit.nvml.node import open_node as open_nvml_node

    return open_nvml_node(nvml_library, simulate, sim_state, bundled_model=model_for_pci_id)


def __dir__() -> list[str]:
    return sorted([*__all__, *_SUBMODULES])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from migkit import hardware, models, names, simulator
    from migkit.checkpoint import Checkpoint, restore
    from migkit.config import ConfigEntry, MigConfigFile, load_config, select
    from migkit.config.filters import DeviceFilter
    from migkit.errors import (
        ApplyError,
        ConfigError,
        InfeasibleError,
        InsufficientResources,
        InUse,
        MigkitError,
        NoPermission,
        NotFound,
        NotSupported,
        NvmlError,
        NvmlLibraryNotFound,
        ReadOnlyError,
        ResetFailed,
        ResetRequired,
        UnknownModelError,
        UnknownProfileError,
    )
    from migkit.execution.orchestrate import apply, assert_config
    from migkit.execution.report import ApplyReport, AssertResult, GpuOutcome
    from migkit.hardware import gpu_model, gpu_models
    from migkit.models import (
        ComputeInstance,
        ComputeProfile,
        CoverageStatus,
        GpuInstance,
        GpuModel,
        GpuState,
        MigMode,
        Outcome,
        Placement,
        Profile,
    )
    from migkit.names import ProfileName, canonical_name, parse_profile_name
    from migkit.nvml.node import Node, NodeLike
    from migkit.planning.plan import GpuPlan, NodePlan, plan_node, plan_offline, render_plan
    from migkit.planning.solver import Layout, PlacedCompute, PlacedInstance, solve
    from migkit.simulator import simulate
