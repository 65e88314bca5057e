"""A rollout's progress, kept on the nodes themselves, and the pure decisions made from it.

Each node a rollout touches carries one annotation, ``migkit.io/rollout``, holding a small JSON
record (:class:`Progress`): the config, a token, the phase (``applying`` -> ``success`` |
``failed``), the config the node had before, whether the rollout cordoned it, and when. The
label change and the record are written in one patch, so after a crash or Ctrl-C a rerun knows
exactly which nodes it labelled, which finished, and which are still in flight.

The token doubles as the agent's retry annotation (``migkit.io/mig.config.retry``): migkit's
agent echoes it in ``migkit.io/mig.config.retry-handled`` with the terminal state it writes, so
the rollout can tell the outcome of *its* change from a state left by an earlier run.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping, Sequence

import attrs

from migkit.agent import labels as L

ANNOTATION = "migkit.io/rollout"

PHASE_APPLYING = "applying"
PHASE_SUCCESS = "success"
PHASE_FAILED = "failed"
PHASES = (PHASE_APPLYING, PHASE_SUCCESS, PHASE_FAILED)


@attrs.frozen
class Progress:
    """What a rollout recorded on one node."""

    config: str
    token: str
    phase: str
    previous: str | None = None
    cordoned: bool = False
    wave: int = 0
    started: str = ""
    finished: str = ""
    message: str = ""

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> Progress | None:
        """The record on a node; None when there is none or it is not one of ours (unreadable)."""
        raw = annotations.get(ANNOTATION)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
            progress = cls(
                config=str(doc["config"]), token=str(doc["token"]), phase=str(doc["phase"]),
                previous=None if doc.get("previous") is None else str(doc["previous"]),
                cordoned=bool(doc.get("cordoned", False)), wave=int(doc.get("wave", 0)),
                started=str(doc.get("started", "")), finished=str(doc.get("finished", "")),
                message=str(doc.get("message", "")),
            )
        except (ValueError, TypeError, KeyError):
            return None
        return progress if progress.phase in PHASES else None


class Standing(enum.Enum):
    """Where a selected node stands with respect to a rollout of one config."""

    DONE = "done"  # this rollout (or an earlier run of it) brought it to success
    ALREADY = "already"  # it had the config, in success, before the rollout
    FAILED = "failed"  # a run of this rollout ended failed on it
    IN_FLIGHT = "in flight"  # labelled by this rollout, outcome not recorded yet
    TODO = "todo"  # still to label
    BUSY = "busy"  # mid-change to something else, or changed by someone else: left alone


@attrs.frozen
class Assessment:
    standing: Standing
    detail: str = ""
    progress: Progress | None = None


def assess(labels: Mapping[str, str], annotations: Mapping[str, str], config: str) -> Assessment:
    """Where a node stands for a rollout of ``config`` (pure; from the node's metadata alone)."""
    progress = Progress.from_annotations(annotations)
    label = labels.get(L.CONFIG_LABEL)
    state = labels.get(L.STATE_LABEL)
    ours = progress is not None and progress.config == config and label == config
    if ours:
        assert progress is not None
        if progress.phase == PHASE_SUCCESS:
            return Assessment(Standing.DONE, "done by this rollout", progress)
        if progress.phase == PHASE_FAILED:
            return Assessment(Standing.FAILED, progress.message or "failed", progress)
        return Assessment(Standing.IN_FLIGHT, f"labelled, state {state or 'not yet set'}", progress)
    if label == config:
        if state == L.STATE_SUCCESS:
            return Assessment(Standing.ALREADY, f"already {config} (success)")
        if state == L.STATE_FAILED:
            return Assessment(Standing.FAILED, f"{L.CONFIG_LABEL}={config} already set and {L.STATE_LABEL}=failed")
        return Assessment(Standing.BUSY, f"{L.CONFIG_LABEL}={config} was set by someone else "
                                         f"({L.STATE_LABEL}={state or 'unset'})")
    if state in (L.STATE_PENDING, L.STATE_REBOOTING):
        return Assessment(Standing.BUSY, f"mid-change to {label!r} ({L.STATE_LABEL}={state})")
    return Assessment(Standing.TODO, f"{label or 'no config'} -> {config}")


def outcome(labels: Mapping[str, str], annotations: Mapping[str, str], token: str) -> str | None:
    """The terminal state the agent reported for the change carrying ``token``; None while the
    change is still under way (or the state seen belongs to an earlier run)."""
    state = labels.get(L.STATE_LABEL)
    if state in L.TERMINAL_STATES and annotations.get(L.HANDLED_RETRY_ANNOTATION) == token:
        return state
    return None


def wave_size(max_unavailable: str, selected: int) -> int:
    """Nodes per wave for ``--max-unavailable``: ``N`` or ``P%`` of the selected nodes, rounded
    down, at least 1. ValueError on anything else."""
    text = max_unavailable.strip()
    if text.endswith("%"):
        percent = float(text[:-1])
        if not 0 < percent <= 100 or math.isnan(percent):
            raise ValueError(f"--max-unavailable {max_unavailable!r}: a percentage must be in (0, 100]")
        return max(1, math.floor(selected * percent / 100))
    count = int(text)
    if count < 1:
        raise ValueError(f"--max-unavailable {max_unavailable!r}: at least 1 node")
    return count


def plan_waves(in_flight: Sequence[str], todo: Sequence[str], size: int) -> list[list[str]]:
    """Waves of at most ``size`` nodes: nodes already in flight first (a resumed wave), then the
    rest in name order."""
    queue = sorted(in_flight) + sorted(todo)
    return [queue[i : i + size] for i in range(0, len(queue), size)]


def label_patch(config: str, progress: Progress, *, cordon: bool, resource_version: str) -> dict[str, object]:
    """The one patch that starts a node's change: the config label, the state label cleared (so
    no stale terminal state is mistaken for the outcome), the token as the agent's retry
    annotation, the progress record, and the cordon when asked. It applies only to the node as
    last read (``resource_version``): the API server refuses it (409) if anything changed since."""
    body: dict[str, object] = {
        "metadata": {
            "resourceVersion": resource_version,
            "labels": {L.CONFIG_LABEL: config, L.STATE_LABEL: None},
            "annotations": {L.RETRY_ANNOTATION: progress.token, ANNOTATION: progress.to_json()},
        }
    }
    if cordon:
        body["spec"] = {"unschedulable": True}
    return body


def finish_patch(progress: Progress, *, uncordon: bool) -> dict[str, object]:
    """The patch that records a node's outcome (and uncordons it after success when we cordoned it)."""
    body: dict[str, object] = {"metadata": {"annotations": {ANNOTATION: progress.to_json()}}}
    if uncordon:
        body["spec"] = {"unschedulable": None}
    return body


__all__ = [
    "ANNOTATION",
    "PHASES",
    "PHASE_APPLYING",
    "PHASE_FAILED",
    "PHASE_SUCCESS",
    "Assessment",
    "Progress",
    "Standing",
    "assess",
    "finish_patch",
    "label_patch",
    "outcome",
    "plan_waves",
    "wave_size",
]
