"""What an apply or restore did, per GPU and for the node, and how it reads as text and JSON."""

from __future__ import annotations

import json

import attrs

from migkit.models import GpuInstance, GpuState, Outcome

__all__ = ["ApplyReport", "AssertResult", "GpuOutcome", "describe_gpu", "gi_text"]


def gi_text(gi: GpuInstance) -> str:
    """``3g.40gb@0:4``: a GPU instance's profile and placement."""
    return f"{gi.profile}@{gi.start}:{gi.size}"


def describe_gpu(gpu: GpuState) -> str:
    """``MIG enabled: 3g.40gb@0:4 [3g.40gb], 1g.10gb@6:1 [1g.10gb]`` — state in one line."""
    if not gpu.mig_capable:
        return "MIG not supported"
    mode = "MIG enabled" if gpu.mig_enabled else "MIG disabled"
    if gpu.mode_change_pending:
        mode += f" (pending {'enable' if gpu.pending_mig_mode else 'disable'})"
    if not gpu.gpu_instances:
        return mode + ", no instances" if gpu.mig_enabled else mode
    parts = []
    for gi in sorted(gpu.gpu_instances, key=lambda g: g.start):
        cis = ", ".join(ci.profile for ci in gi.compute_instances) or "no CIs"
        parts.append(f"{gi_text(gi)} [{cis}]")
    return f"{mode}: " + ", ".join(parts)


@attrs.define
class GpuOutcome:
    index: int
    name: str
    status: Outcome
    detail: str = ""
    error: str | None = None
    state: str = ""  # the GPU's state at the end, in one line
    mode_changed: bool = False  # its MIG mode was changed (and is still changed) by this run

    def line(self) -> str:
        text = f"GPU {self.index}: {self.status}"
        if self.detail:
            text += f" - {self.detail}"
        if self.error:
            text += f" ({self.error})"
        return text


@attrs.define
class ApplyReport:
    outcomes: list[GpuOutcome] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    error: str | None = None
    plan_text: str = ""
    dry_run: bool = False
    streamed: bool = False  # changes were already printed one line per GPU as they happened
    plan_json: str = ""
    # Set when a GPU's state could not be read and the run was refused before any change.
    refused: bool = False
    # Whether any mutating NVML call was issued (exit 2 needs "nothing was touched").
    touched: bool = False
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and not self.refused
            and self.interrupted is None
            and all(
                o.status not in (Outcome.FAILED, Outcome.RESTORED, Outcome.NOT_ATTEMPTED)
                for o in self.outcomes
            )
        )

    @property
    def changed(self) -> int:
        """GPUs left changed by this run (a MIG mode change alone counts)."""
        return sum(o.status == Outcome.APPLIED or o.mode_changed for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 applied; 1 not applied; 2 refused before any change (a GPU could not be read);
        128 + the signal number when interrupted (130 for SIGINT, 143 for SIGTERM)."""
        if self.interrupted is not None:
            return 128 + self.interrupted
        if self.ok:
            return 0
        return 2 if self.refused and not self.touched else 1

    def summary(self) -> str:
        lines = [f"warning: {w}" for w in self.warnings]
        if self.dry_run:
            lines.append(self.plan_text)
            return "\n".join(lines)
        for o in self.outcomes:
            quiet = (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.NOT_COVERED, Outcome.SKIPPED)
            if not self.streamed or o.status not in quiet:
                lines.append(o.line())
        if self.streamed:
            unchanged = sum(
                o.status == Outcome.UNCHANGED and not o.mode_changed for o in self.outcomes
            )
            lines.append(f"{self.changed} GPU(s) changed, {unchanged} unchanged")
        if self.interrupted is not None:
            lines.append(
                f"interrupted by {_signal_name(self.interrupted)}: no new step was started; "
                "the GPUs changed part-way were rolled back"
            )
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append("MIG configuration applied" if self.ok else "MIG configuration NOT applied")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "exit_code": self.exit_code,
                "changed": self.changed,
                "interrupted": _signal_name(self.interrupted) if self.interrupted else None,
                "refused": self.refused,
                "error": self.error,
                "warnings": self.warnings,
                "dry_run": self.dry_run,
                "plan": json.loads(self.plan_json) if self.dry_run and self.plan_json else None,
                "gpus": [attrs.asdict(o) for o in self.outcomes],
            },
            indent=2,
        )


def _signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@attrs.frozen
class AssertResult:
    ok: bool
    lines: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    valid_only: bool = False

    def summary(self) -> str:
        head = [f"warning: {w}" for w in self.warnings]
        if self.valid_only:
            tail = [
                "Selected MIG configuration is valid"
                if self.ok
                else "Validity unknown: a GPU of this node could not be read"
            ]
        else:
            tail = [
                "Selected MIG configuration currently applied"
                if self.ok
                else "Assertion failure: selected configuration not currently applied"
            ]
        return "\n".join([*head, *self.lines, *tail])

    def to_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "gpus": list(self.lines), "warnings": list(self.warnings)}, indent=2
        )
