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

    @property
    def ok(self) -> bool:
        return self.error is None and all(
            o.status not in (Outcome.FAILED, Outcome.RESTORED, Outcome.NOT_ATTEMPTED) for o in self.outcomes
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

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
            changed = sum(o.status == Outcome.APPLIED for o in self.outcomes)
            unchanged = sum(o.status == Outcome.UNCHANGED for o in self.outcomes)
            lines.append(f"{changed} GPU(s) changed, {unchanged} unchanged")
        if self.error:
            lines.append(f"error: {self.error}")
        lines.append("MIG configuration applied" if self.ok else "MIG configuration NOT applied")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "error": self.error,
                "warnings": self.warnings,
                "dry_run": self.dry_run,
                "plan": json.loads(self.plan_json) if self.dry_run and self.plan_json else None,
                "gpus": [attrs.asdict(o) for o in self.outcomes],
            },
            indent=2,
        )


@attrs.frozen
class AssertResult:
    ok: bool
    lines: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    valid_only: bool = False

    def summary(self) -> str:
        head = [f"warning: {w}" for w in self.warnings]
        if self.valid_only:
            tail = ["Selected MIG configuration is valid"]
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
