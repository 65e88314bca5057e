"""Debug logging of an apply or restore (``migkit -d``): each NVML batch with its size and
time, each GPU's plan decision with its reason, and the time of each phase.

Everything goes to the ``migkit`` logger at DEBUG level; nothing is formatted unless that
level is enabled, so a run without ``-d`` pays one check per batch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from migkit.execution.actions import GpuTarget, matches
from migkit.execution.report import gi_text

if TYPE_CHECKING:
    from migkit.nvml.node import NodeLike

__all__ = ["log", "log_decisions", "phase", "traced"]

log = logging.getLogger("migkit")

_BATCHES = (
    "create_gpu_instances",
    "create_compute_instances",
    "destroy_compute_instances",
    "destroy_gpu_instances",
    "set_mig_mode",
)


class _TracedNode:
    """A node whose bulk NVML calls are logged: function, items, failures and time taken."""

    def __init__(self, node: NodeLike) -> None:
        self._node = node

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._node, name)
        if name in _BATCHES:
            return _batch(name, attribute)
        return attribute

    def snapshot(self, *, tables: bool = True) -> Any:
        started = time.perf_counter()
        try:
            gpus = self._node.snapshot(tables=tables)
        except Exception as err:
            log.debug("nvml snapshot: failed after %s: %s", _seconds(started), err)
            raise
        unknown = sum(1 for g in gpus if g.unknown)
        log.debug(
            "nvml snapshot: %d GPU(s)%s in %s",
            len(gpus),
            f", {unknown} with failed reads" if unknown else "",
            _seconds(started),
        )
        return gpus

    def reset_gpus(self, gpus: Sequence[Any]) -> None:
        started = time.perf_counter()
        try:
            self._node.reset_gpus(gpus)
        finally:
            log.debug("reset: %d GPU(s) in %s", len(gpus), _seconds(started))


def _batch(name: str, call: Any) -> Any:
    def logged(items: Iterable[Any], **options: Any) -> Any:
        requests = list(items)
        started = time.perf_counter()
        results = call(requests, **options)
        failed = sum(1 for r in results if not getattr(r, "ok", True))
        gpus = sorted({r.gpu for r in requests if isinstance(getattr(r, "gpu", None), int)})
        log.debug(
            "nvml %s%s: %d item(s), %d result(s)%s in %s",
            name,
            f" on GPU {', '.join(map(str, gpus))}" if gpus else "",
            len(requests),
            len(results),
            f", {failed} failed" if failed else "",
            _seconds(started),
        )
        return results

    return logged


def traced(node: NodeLike) -> NodeLike:
    """``node`` itself, or (with debug logging on) a view of it that logs every NVML batch."""
    if not log.isEnabledFor(logging.DEBUG) or isinstance(node, _TracedNode):
        return node
    # _TracedNode forwards every member it does not wrap (__getattr__), so it is a NodeLike.
    return cast("NodeLike", _TracedNode(node))


def _seconds(started: float) -> str:
    return f"{time.perf_counter() - started:.3f} s"


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Log how long a phase of the run took."""
    started = time.perf_counter()
    try:
        yield
    finally:
        log.debug("phase %s: %s", name, _seconds(started))


def log_decisions(targets: Sequence[GpuTarget], *, mode_only: bool = False) -> None:
    """For each GPU, what the run will do to it and why."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for target in targets:
        log.debug("plan GPU %d: %s", target.gpu.index, _decision(target, mode_only))


def _decision(target: GpuTarget, mode_only: bool) -> str:
    gpu = target.gpu
    if target.desired_mode is None:
        why = "no MIG support" if not gpu.mig_capable else "no entry covers it"
        return f"left alone ({target.coverage}: {why})"
    fine, why_not = matches(target, mode_only=mode_only)
    if fine:
        return "kept as it is (already matches)"
    parts = [f"changes ({why_not})"]
    if not target.mode_matches:
        word = "enabled" if target.desired_mode else "disabled"
        parts.append(f"MIG mode {'enabled' if gpu.mig_enabled else 'disabled'} -> {word}")
    if mode_only or not target.desired_mode:
        return "; ".join(parts)
    actions = target.actions()
    destroyed = set(actions.destroy_gis) if gpu.mig_enabled else set()
    existing = sorted(gpu.gpu_instances, key=lambda gi: gi.start) if gpu.mig_enabled else []
    kept = [gi_text(gi) for gi in existing if gi.id not in destroyed]
    gone = [gi_text(gi) for gi in existing if gi.id in destroyed]
    if target.plan is not None:
        made = [f"{gi.profile}@{gi.start}:{gi.size}" for gi in target.plan.create_gpu_instances]
        reason = "not in the planned layout"
    else:
        made = [f"profile {pid}@{p.start}:{p.size}" for pid, p in actions.create_gis]
        reason = "not in the checkpoint"
    parts.append("kept: " + (", ".join(kept) or "none") + (" (already where wanted)" if kept else ""))
    parts.append("destroyed: " + (", ".join(gone) or "none") + (f" ({reason})" if gone else ""))
    parts.append("created: " + (", ".join(made) or "none"))
    if actions.destroy_cis or actions.create_cis:
        parts.append(
            f"compute instances: {len(actions.destroy_cis)} destroyed, {len(actions.create_cis)} created"
        )
    if target.plan is not None:
        parts.extend(target.plan.notes)
    return "; ".join(parts)
