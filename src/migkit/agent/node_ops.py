"""The agent's only door into migkit's core: load, check, assert, apply and generate.

It calls the public functions of ``migkit`` (``open_node``, ``load_config``, ``assert_config``,
``plan_node``, ``apply``), imported from the modules that define them so type checkers see them.

Everything the agent needs from the GPUs goes through :class:`NodeOps`, so the core can change
under it and tests can see exactly which core calls a reconcile makes. Each call opens the node
afresh (a level-triggered agent reads the hardware every time) and closes it again, so a
long-running agent holds no NVML state between reconciles.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import attrs

from migkit.errors import MigkitError

# The keys of the per-node ConfigMap (read back by ``migkit rollout`` and ``cluster status``).
CONFIG_KEY = "config.yaml"
GPU_COUNT_KEY = "gpu-count"
GPU_MODELS_KEY = "gpu-models"
UNKNOWN_MODEL = "unknown"


class NodeOpsError(Exception):
    """A core call failed; the message says which and why (config, NVML, simulator)."""


@attrs.frozen
class Check:
    """The answer of a read-only check: ``ok`` and the lines that explain it."""

    ok: bool
    detail: str


@attrs.frozen
class ApplyResult:
    ok: bool
    summary: str


@attrs.frozen
class NodeInventory:
    """What the agent publishes about its node: the generated config (None when this node's
    profiles cannot be listed, with ``problem`` saying why) and each GPU's bundled model name
    in the order a config's ``devices: [i]`` counts them ('' for a GPU no bundled table matches).
    """

    config: str | None
    gpu_models: tuple[str, ...]
    problem: str = ""

    def config_map_data(self) -> dict[str, str]:
        """The ``<node>-mig-config`` ConfigMap's data: ``config.yaml`` (when generated),
        ``gpu-count`` and ``gpu-models`` (comma-separated, ``unknown`` for an unmatched GPU)."""
        data = {GPU_COUNT_KEY: str(len(self.gpu_models)),
                GPU_MODELS_KEY: ",".join(name or UNKNOWN_MODEL for name in self.gpu_models)}
        if self.config is not None:
            data[CONFIG_KEY] = self.config
        return data


@attrs.frozen
class NodeOps:
    """Core operations on this node's GPUs.

    ``sim_state``: a simulated node's state file (``MIGKIT_SIM_STATE``); ``nvml_library``: an
    explicit libnvidia-ml; neither: the driver found the usual way. ``gpu_access``: a context
    manager factory entered around every opening of the GPUs (nothing by default); a process
    hosting several agents uses it to take turns on one NVML library, e.g.
    ``NodeOps(sim_state=path, gpu_access=lambda: lock)``.
    """

    sim_state: str | None = None
    nvml_library: str | None = None
    gpu_access: Callable[[], AbstractContextManager[object]] = attrs.field(default=nullcontext, eq=False)

    @classmethod
    def from_env(cls) -> NodeOps:
        return cls(
            sim_state=os.environ.get("MIGKIT_SIM_STATE") or None,
            nvml_library=os.environ.get("MIGKIT_NVML_LIBRARY") or None,
        )

    @contextmanager
    def _node(self) -> Iterator[Any]:
        from migkit.nvml.node import open_node

        with self.gpu_access():
            try:
                node = open_node(nvml_library=self.nvml_library, sim_state=self.sim_state)
            except MigkitError as err:
                raise NodeOpsError(f"cannot open the GPUs: {err}") from None
            with node:
                yield node

    @staticmethod
    def load(path: str) -> Any:
        """The parsed config file; :class:`NodeOpsError` naming file, line and column when bad."""
        from migkit.config import load_config

        try:
            return load_config(os.fspath(path))
        except (MigkitError, OSError, UnicodeDecodeError) as err:
            raise NodeOpsError(f"config file {path}: {err}") from None

    @staticmethod
    def load_text(text: str, name: str) -> Any:
        from migkit.config import load_config

        try:
            return load_config(text, name=name)
        except MigkitError as err:
            raise NodeOpsError(f"{name}: {err}") from None

    def valid(self, config: Any, name: str) -> Check:
        """Whether ``name`` exists in the file and can be placed on these GPUs (no change made)."""
        from migkit.execution.orchestrate import assert_config

        try:
            with self._node() as node:
                assert_config(node, config, name, valid_only=True)
        except MigkitError as err:
            return Check(False, str(err))
        return Check(True, "configuration is valid for this node")

    def assert_config(self, config: Any, name: str, *, mode_only: bool = False) -> Check:
        from migkit.execution.orchestrate import assert_config

        try:
            with self._node() as node:
                result = assert_config(node, config, name, mode_only=mode_only)
        except MigkitError as err:
            return Check(False, str(err))
        return Check(result.ok, summarize(result.lines))

    def mode_change_gpus(self, config: Any, name: str) -> tuple[int, ...]:
        """Indices of the covered GPUs whose MIG mode must change (now or pending a reset)."""
        from migkit.planning.plan import plan_node

        try:
            with self._node() as node:
                plan = plan_node(config, name, node.snapshot())
        except MigkitError as err:
            raise NodeOpsError(str(err)) from None
        return tuple(g.index for g in plan.gpus if g.covered and g.mode_change is not None)

    def apply(self, config: Any, name: str, *, mode_only: bool = False, skip_reset: bool = False) -> ApplyResult:
        from migkit.execution.orchestrate import apply

        progress = io.StringIO()
        try:
            with self._node() as node:
                report = apply(node, config, name, mode_only=mode_only, skip_reset=skip_reset,
                                      progress=progress)
        except MigkitError as err:
            return ApplyResult(False, str(err))
        return ApplyResult(report.ok, report.summary().replace("\n", "; "))

    def inventory(self) -> NodeInventory:
        """The generated config and the GPUs' bundled model names, from one snapshot.

        :class:`NodeOpsError` when the GPUs cannot be read at all; a node whose profiles cannot
        be listed (``generate-config`` fails) still has its GPUs named, with ``config`` None.
        """
        from migkit.export import render
        from migkit.generate import generate_config

        try:
            with self._node() as node:
                gpus = node.snapshot()
        except MigkitError as err:
            raise NodeOpsError(f"cannot read the GPUs: {err}") from None
        models = tuple(gpu.model_name or _bundled_name(gpu.pci_device_id, gpu.memory_mib) for gpu in gpus)
        try:
            return NodeInventory(render(generate_config(gpus)), models)
        except MigkitError as err:
            return NodeInventory(None, models, f"cannot generate a config for this node: {err}")

    def layout(self) -> str:
        """The node's current MIG state as an exported v1 document (for logs and tests)."""
        from migkit.export import export_config, render

        with self._node() as node:
            return render(export_config(node.snapshot()))


def _bundled_name(pci_device_id: int, memory_mib: int) -> str:
    """The bundled hardware table of a GPU by its PCI device id and memory; '' when none."""
    from migkit.hardware import model_for_pci_id

    model = model_for_pci_id(pci_device_id, memory_mib)
    return model.name if model is not None else ""


def summarize(lines: tuple[str, ...], most: int = 3) -> str:
    """The GPUs that do not match (at most ``most`` named), for a state message."""
    wrong = [line for line in lines if "does not match" in line]
    if not wrong:
        return "; ".join(lines[:most])
    text = "; ".join(wrong[:most])
    if len(wrong) > most:
        text += f"; and {len(wrong) - most} more GPU(s)"
    return text


def file_digest(path: str) -> str:
    """sha256 of a file's bytes; '' when it cannot be read (a missing file is a change too)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return ""
