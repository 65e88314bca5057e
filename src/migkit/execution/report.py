"""What an apply or restore did, per GPU and for the node, and how it reads as text and JSON.

Text output is split by kind: results (the first line saying what will happen, the table of
GPUs, the count of changes, the closing phrase on success) go to standard output; warnings,
errors and the closing phrase on failure go to standard error, with identical errors merged
into one line that lists the GPUs. :class:`Progress` shows each GPU's steps as they finish.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence
from typing import TextIO

import attrs

from migkit.models import GpuInstance, GpuState, Outcome

__all__ = [
    "ApplyReport",
    "AssertResult",
    "GpuOutcome",
    "Progress",
    "describe_gpu",
    "gi_text",
    "gpu_list",
    "merge_by_gpu",
]

# What a successful run says last, as nvidia-mig-parted says it.
APPLIED_PHRASE = "MIG configuration applied successfully"
RESTORED_PHRASE = "MIG configuration restored successfully"
# nvidia-mig-parted has no closing phrase for a failure (it logs the error and exits 1).
NOT_APPLIED_PHRASE = "MIG configuration NOT applied"
NOT_RESTORED_PHRASE = "MIG configuration NOT restored"


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


def gpu_list(indices: Iterable[int]) -> str:
    """``GPU 0, 1, 3``: GPUs named once each, in index order."""
    return "GPU " + ", ".join(str(i) for i in sorted(set(indices)))


def merge_by_gpu(items: Iterable[tuple[int, str]]) -> list[str]:
    """``["GPU 0, 1, 3: <text>"]``: one line per distinct text, naming every GPU that has it,
    in the order each text first appears. A text's mention of its own GPU (``GPU 3: ``, as
    NVML errors carry it) is left out, so that the same error on several GPUs is one line."""
    groups: dict[str, list[int]] = {}
    for index, text in items:
        own = re.compile(rf"\bGPU {index}(?:: |\b)")
        groups.setdefault(own.sub("", text), []).append(index)
    return [f"{gpu_list(indices)}: {text}" for text, indices in groups.items()]


@attrs.define
class GpuOutcome:
    index: int
    name: str
    status: Outcome
    detail: str = ""
    error: str | None = None
    state: str = ""  # the GPU's state at the end, in one line
    mode_changed: bool = False  # its MIG mode was changed (and is still changed) by this run

    def text(self, *, error: bool = True) -> str:
        """The outcome without the GPU: ``applied - MIG mode enabled``; with ``error``, the
        error in parentheses after it."""
        text = str(self.status)
        if self.detail:
            text += f" - {self.detail}"
        if self.error and error:
            text += f" ({self.error})"
        return text

    def line(self) -> str:
        return f"GPU {self.index}: {self.text()}"

    @property
    def is_problem(self) -> bool:
        """A failure worth an error line: failed, or ended otherwise than wanted with a reason."""
        return self.status == Outcome.FAILED or (
            self.error is not None
            and self.status in (Outcome.RESTORED, Outcome.NOT_ATTEMPTED, Outcome.PENDING)
        )


_QUIET_CHANGE = {
    Outcome.UNCHANGED: "-",
    Outcome.NOT_COVERED: "no entry covers it; not touched",
    Outcome.SKIPPED: "no MIG support; not touched",
}


_ZERO_COUNT = re.compile(r"\b0 (?:kept|destroyed|created)(?:, )?|, 0 (?:destroyed|created)\b")


def _compact(detail: str) -> str:
    """``GPU instances: 4 created`` for ``GPU instances: 0 kept, 0 destroyed, 4 created``."""
    return _ZERO_COUNT.sub("", detail)


def _table(outcomes: Sequence[GpuOutcome]) -> list[str]:
    """One line per GPU, sorted by index: GPU, model, outcome and what changed."""
    rows = [("GPU", "MODEL", "OUTCOME", "CHANGES")]
    for o in sorted(outcomes, key=lambda o: o.index):
        change = _compact(o.detail) if o.detail else _QUIET_CHANGE.get(o.status, "-")
        rows.append((str(o.index), o.name, str(o.status), change))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]


@attrs.define
class ApplyReport:
    outcomes: list[GpuOutcome] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    error: str | None = None
    plan_text: str = ""
    dry_run: bool = False
    streamed: bool = False  # progress was shown while the run went on
    plan_json: str = ""
    # Set when a GPU's state could not be read and the run was refused before any change.
    refused: bool = False
    # Whether any mutating NVML call was issued (exit 2 needs "nothing was touched").
    touched: bool = False
    interrupted: int | None = None  # the signal (SIGINT, SIGTERM) that stopped the run
    restore: bool = False  # a checkpoint restore (its closing phrases say so)

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

    def results_text(self) -> str:
        """What goes to standard output: the plan (dry run), or the table of GPUs sorted by
        index, the count of changes and, on success, upstream's closing phrase."""
        if self.dry_run:
            return self.plan_text
        lines = _table(self.outcomes) if self.outcomes else []
        if self.streamed and not self.refused:
            unchanged = sum(
                o.status == Outcome.UNCHANGED and not o.mode_changed for o in self.outcomes
            )
            lines.append(f"{self.changed} GPU(s) changed, {unchanged} unchanged")
        if self.ok:
            lines.append(RESTORED_PHRASE if self.restore else APPLIED_PHRASE)
        return "\n".join(lines)

    def problems_text(self) -> str:
        """What goes to standard error: warnings, then the errors (identical ones merged, with
        the GPUs listed) and, on failure, the closing phrase."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.dry_run:
            return "\n".join(lines)
        lines.extend(
            f"error: {line}"
            for line in merge_by_gpu((o.index, o.text()) for o in self.outcomes if o.is_problem)
        )
        lines.extend(self._stop_lines())
        if not self.ok:
            lines.append(NOT_RESTORED_PHRASE if self.restore else NOT_APPLIED_PHRASE)
        return "\n".join(lines)

    def _stop_lines(self) -> list[str]:
        """What stopped the run early, if anything: a signal, an error."""
        lines = []
        if self.interrupted is not None:
            lines.append(
                f"interrupted by {_signal_name(self.interrupted)}: no new step was started; "
                "the GPUs changed part-way were rolled back"
            )
        if self.error:
            lines.append(f"error: {self.error}")
        return lines

    def summary(self) -> str:
        """The report in a few lines, for a log or an event: warnings, the GPUs that did not
        end as wanted (identical lines merged), the count of changes, errors and the verdict.
        The dry-run plan comes whole."""
        lines = [f"warning: {w}" for w in self.warnings]
        if self.dry_run:
            return "\n".join([*lines, self.plan_text])
        quiet = (Outcome.APPLIED, Outcome.UNCHANGED, Outcome.NOT_COVERED, Outcome.SKIPPED)
        lines.extend(merge_by_gpu((o.index, o.text()) for o in self.outcomes if o.status not in quiet))
        results = self.results_text().split("\n")
        lines.extend(line for line in results if line.endswith(" unchanged"))
        lines.extend(self._stop_lines())
        if self.ok:
            lines.append(RESTORED_PHRASE if self.restore else APPLIED_PHRASE)
        else:
            lines.append(NOT_RESTORED_PHRASE if self.restore else NOT_APPLIED_PHRASE)
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


_GPU_LINE = re.compile(r"GPU (\d+): (.*)\Z", re.DOTALL)


@attrs.frozen
class AssertResult:
    ok: bool
    lines: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    valid_only: bool = False

    @property
    def verdict(self) -> str:
        if self.valid_only:
            if self.ok:
                return "Selected MIG configuration is valid"
            return "Validity unknown: a GPU of this node could not be read"
        if self.ok:
            return "Selected MIG configuration currently applied"
        return "Assertion failure: selected configuration not currently applied"

    def _split(self) -> tuple[list[str], list[tuple[int, str]]]:
        """Per-GPU lines that are results (a match, not checked) and those that are problems."""
        results: list[str] = []
        problems: list[tuple[int, str]] = []
        for line in self.lines:
            found = _GPU_LINE.match(line)
            if found and not _is_fine(found.group(2)):
                problems.append((int(found.group(1)), found.group(2)))
            else:
                results.append(line)
        return results, problems

    def results_text(self) -> str:
        """Standard output: the GPUs that match (or are not checked), and the verdict on success."""
        results, _ = self._split()
        return "\n".join([*results, *([self.verdict] if self.ok else [])])

    def problems_text(self) -> str:
        """Standard error: warnings, each difference (identical ones merged), the verdict on failure."""
        _, problems = self._split()
        lines = [f"warning: {w}" for w in self.warnings]
        lines.extend(merge_by_gpu(problems))
        if not self.ok:
            lines.append(self.verdict)
        return "\n".join(lines)

    def summary(self) -> str:
        results, problems = self._split()
        head = [f"warning: {w}" for w in self.warnings]
        return "\n".join([*head, *results, *merge_by_gpu(problems), self.verdict])

    def to_json(self) -> str:
        return json.dumps(
            {"ok": self.ok, "gpus": list(self.lines), "warnings": list(self.warnings)}, indent=2
        )


def _is_fine(text: str) -> bool:
    return text == "matches" or text.endswith("(not checked)") or text.startswith("configuration is valid")


# --------------------------------------------------------------------------- progress

_UP = "\x1b[{n}F"  # cursor to the start of the line n lines up
_CLEAR_BELOW = "\x1b[J"


class Progress:
    """Tells what an apply or restore is doing as each GPU step finishes.

    ``out`` receives the first line (what will happen). Steps go to ``log`` as plain lines
    (``GPU 3: MIG mode enabled``), or, with ``live``, as a block of one line per GPU that is
    redrawn in place on ``out`` (a terminal) and erased at the end, so that the final table
    is the only place each GPU is listed. Safe to call from the per-GPU worker threads.
    """

    def __init__(self, out: TextIO, log: TextIO | None = None, *, live: bool = False) -> None:
        self._out = out
        self._log = log if log is not None else out
        self._live = live
        self._lock = threading.Lock()
        self._rows: dict[int, str] = {}
        self._drawn = 0

    @classmethod
    def of(cls, progress: Progress | TextIO | None) -> Progress | None:
        """A stream given where a :class:`Progress` is expected gets plain lines."""
        if progress is None or isinstance(progress, Progress):
            return progress
        return cls(progress)

    def begin(self, headline: str, changing: Sequence[int] = ()) -> None:
        """Print what will happen; on a live view, a waiting line per GPU that will change."""
        with self._lock:
            self._write(self._out, headline + "\n")
            if self._live:
                self._rows = {i: "waiting" for i in sorted(changing)}
                self._redraw()

    def step(self, index: int, text: str) -> None:
        """A step of one GPU finished."""
        with self._lock:
            if self._live:
                self._rows[index] = text
                self._redraw()
            else:
                self._write(self._log, f"GPU {index}: {text}\n")

    def note(self, text: str) -> None:
        """A node-wide step (a GPU reset)."""
        with self._lock:
            if self._live:
                self._erase()
                self._write(self._out, text + "\n")
                self._redraw()
            else:
                self._write(self._log, text + "\n")

    def end(self) -> None:
        """Erase the live view (the final table takes its place)."""
        with self._lock:
            if self._live:
                self._erase()
                self._rows = {}

    def _erase(self) -> None:
        if self._drawn:
            self._write(self._out, _UP.format(n=self._drawn) + _CLEAR_BELOW)
            self._drawn = 0

    def _width(self) -> int:
        """Columns of the terminal: a live line longer than that would wrap, and the cursor
        would no longer go back up to the block's first line."""
        try:
            return os.get_terminal_size(self._out.fileno()).columns or 80
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return 80

    def _redraw(self) -> None:
        width = max(self._width() - 1, 20)
        text = "".join(
            f"\x1b[2K{f'GPU {i}: {_compact(row)}'[:width]}\n" for i, row in sorted(self._rows.items())
        )
        up = _UP.format(n=self._drawn) if self._drawn else ""
        self._write(self._out, up + text)
        self._drawn = len(self._rows)

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        stream.write(text)
        stream.flush()
