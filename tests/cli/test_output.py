"""What apply, assert and restore print, and where: the first line, progress, the final
table, merged errors, stdout for results and stderr for problems, upstream's closing phrases
and the ``-d`` log."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import migkit
from migkit import simulator
from migkit.cli import main
from migkit.config import load_config
from migkit.execution.orchestrate import apply

ALL_SET_MODE_FAIL = ",".join(f"nvmlDeviceSetMigMode@{n}=UNKNOWN" for n in range(1, 5))
TABLE_ROW = re.compile(r"^(\d+)\s{2,}\S")


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        subprocess.run(
            [sys.executable, "-m", "migkit", "generate-config", "--gpu", "h100-80gb"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return str(path)


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    previous = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if value is not None:
            if previous is None:
                del os.environ[name]
            else:
                os.environ[name] = previous


def cli(*args: str, faults: str | None = None) -> tuple[int, str, str]:
    """Run the CLI in this process; (exit code, stdout, stderr). Neither stream is a TTY."""
    out, err = io.StringIO(), io.StringIO()
    with _env("MIGKIT_SIM_FAULTS", faults), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def node(tmp_path: Path, spec: str = "4xh100-80gb") -> str:
    return simulator.write_state(tmp_path / "node.state", spec)


def table_rows(text: str) -> list[int]:
    """The GPU index of each row of the final table, in printed order."""
    return [int(m.group(1)) for line in text.splitlines() if (m := TABLE_ROW.match(line))]


def per_gpu_mentions(text: str, index: int) -> int:
    """Lines about GPU ``index`` alone: ``GPU 3: ...`` lines and table rows."""
    return sum(
        1
        for line in text.splitlines()
        if line.startswith(f"GPU {index}: ") or (TABLE_ROW.match(line) and line.split()[0] == str(index))
    )


# --------------------------------------------------------------------------- 1. the first line


class _Recorder(io.StringIO):
    """A progress stream that records each write into a shared event list."""

    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__()
        self.events = events

    def write(self, text: str) -> int:
        self.events.append(("print", text))
        return super().write(text)


class _WatchedNode:
    """A node that records each mutating NVML batch into the shared event list."""

    def __init__(self, inner: Any, events: list[tuple[str, str]]) -> None:
        self._inner, self._events = inner, events

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name.startswith(("create_", "destroy_", "set_mig_mode", "reset_gpus")):

            def call(*args: Any, **kwargs: Any) -> Any:
                self._events.append(("nvml", name))
                return attribute(*args, **kwargs)

            return call
        return attribute


def test_the_first_line_says_what_will_happen_before_any_change(tmp_path: Path, config_file: str) -> None:
    """The headline (config, GPU count, how many change) is printed before the first NVML change."""
    state = node(tmp_path, "3xh100-80gb")
    config = load_config(config_file)
    with migkit.open_node(sim_state=state) as n:
        assert apply(n, config, "all-balanced", progress=io.StringIO()).ok  # GPU 0-2 balanced
    disabled = load_config(
        "version: v1\nmig-configs:\n  mixed:\n"
        "    - devices: [0]\n      mig-enabled: false\n"
        "    - devices: [1, 2]\n      mig-enabled: true\n      mig-devices: {1g.10gb: 2, 2g.20gb: 1, 3g.40gb: 1}\n"
    )
    events: list[tuple[str, str]] = []
    with migkit.open_node(sim_state=state) as n:
        report = apply(_WatchedNode(n, events), disabled, "mixed", progress=_Recorder(events))
    assert report.ok
    first_change = next(k for k, (kind, _) in enumerate(events) if kind == "nvml")
    printed = "".join(text for kind, text in events[:first_change] if kind == "print")
    assert printed.splitlines()[0] == "Applying config mixed to 3 GPUs: 1 change, 2 already match"


def test_the_cli_prints_the_headline_first_on_stdout(tmp_path: Path, config_file: str) -> None:
    """The first line of apply's standard output names the config and the GPUs that change."""
    state = node(tmp_path)
    code, out, _ = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")
    assert code == 0
    assert out.splitlines()[0] == "Applying config all-balanced to 4 GPUs: 4 change, 0 already match"
    code, out, _ = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")
    assert out.splitlines()[0] == "Applying config all-balanced to 4 GPUs: 0 change, 4 already match"


# --------------------------------------------------------------------------- 2. progress and the table


def test_without_a_terminal_progress_is_plain_lines_and_the_table_lists_each_gpu_once(
    tmp_path: Path, config_file: str
) -> None:
    """Not a TTY: plain progress lines on stderr as steps finish; stdout has one table row per
    GPU, sorted by index, and no other per-GPU line."""
    state = node(tmp_path)
    code, out, err = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")
    assert code == 0
    assert table_rows(out) == [0, 1, 2, 3]
    for index in range(4):
        assert per_gpu_mentions(out, index) == 1, out
        assert f"GPU {index}: MIG mode enabled" in err.splitlines()
        assert any(line.startswith(f"GPU {index}: applied") for line in err.splitlines())
    assert "\x1b[" not in out + err
    header = next(line for line in out.splitlines() if line.startswith("GPU "))
    assert header.split() == ["GPU", "MODEL", "OUTCOME", "CHANGES"]


def _screen(raw: str) -> list[str]:
    """What a terminal shows after ``raw``: enough of VT100 for the live view (newlines,
    carriage returns, cursor up to column 0, erase line, erase below)."""
    lines: list[str] = [""]
    row = col = 0
    k = 0
    while k < len(raw):
        c = raw[k]
        if c == "\x1b":
            m = re.match(r"\x1b\[(\d*)([A-Za-z])", raw[k:])
            assert m, repr(raw[k : k + 8])
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "F":
                row, col = max(0, row - n), 0
            elif op == "K":
                lines[row] = ""
            elif op == "J":
                lines[row] = lines[row][:col]
                del lines[row + 1 :]
            k += len(m.group(0))
            continue
        if c == "\n":  # a terminal's line discipline turns it into CR LF (ONLCR)
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif c == "\r":
            col = 0
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + c + line[col + 1 :]
            col += 1
        k += 1
    return [line for line in lines if line]


def _run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run migkit with stdout on a pseudo-terminal; (exit code, terminal bytes, stderr)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "migkit", *args],
        stdout=secondary,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            proc.kill()
            raise AssertionError("no output from migkit on the terminal for 60 s")
        try:
            data = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    err = proc.stderr.read() if proc.stderr else ""
    return proc.wait(timeout=60), b"".join(chunks).decode(), err


def test_on_a_terminal_the_live_view_is_redrawn_in_place_then_replaced_by_the_table(
    tmp_path: Path, config_file: str
) -> None:
    """stdout a TTY: one line per GPU redrawn in place (ANSI), nothing on stderr, and the
    screen at the end shows each GPU once, in the table."""
    state = node(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "MIG_PARTED_"))}
    env["MIGKIT_SIM_LATENCY_MS"] = "5"
    code, raw, err = _run_on_a_terminal(
        ["--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced"], env
    )
    assert code == 0, raw + err
    assert "\x1b[" in raw and "GPU 3: waiting" in raw  # the live view was drawn
    assert err == ""
    screen = _screen(raw)
    assert screen[0] == "Applying config all-balanced to 4 GPUs: 4 change, 0 already match"
    assert table_rows("\n".join(screen)) == [0, 1, 2, 3]
    assert not [line for line in screen if line.startswith("GPU ") and ":" in line.split()[1]], screen
    assert screen[-1] == "MIG configuration applied successfully"


def test_live_progress_from_many_threads_keeps_one_line_per_gpu() -> None:
    """Steps reported concurrently leave one up-to-date line per GPU on the live view."""
    from migkit.execution.report import Progress

    out = io.StringIO()
    progress = Progress(out, live=True)
    progress.begin("Applying config x to 8 GPUs: 8 change, 0 already match", range(8))

    def steps(index: int) -> None:
        for step in ("MIG mode enabled", "applied - done"):
            progress.step(index, f"{step} {index}")

    threads = [threading.Thread(target=steps, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    screen = _screen(out.getvalue())
    assert screen == [
        "Applying config x to 8 GPUs: 8 change, 0 already match",
        *(f"GPU {i}: applied - done {i}" for i in range(8)),
    ]
    progress.end()
    assert _screen(out.getvalue()) == ["Applying config x to 8 GPUs: 8 change, 0 already match"]


# --------------------------------------------------------------------------- 3. merged errors


def test_the_same_error_on_several_gpus_is_one_line_naming_them(tmp_path: Path, config_file: str) -> None:
    """Every GPU's mode change fails the same way: one error line lists GPU 0, 1, 2, 3."""
    state = node(tmp_path)
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    code, out, err = cli(
        "--sim-state", state, "apply", "-f", config_file, "-c", "all-disabled", faults=ALL_SET_MODE_FAIL
    )
    assert code == 1 and table_rows(out) == [0, 1, 2, 3]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: GPU 0, 1, 2, 3: restored - failed setting the MIG mode; previous layout restored "
        "(nvmlDeviceSetMigMode: Unknown Error (NVML_ERROR_UNKNOWN, code 999))"
    ]
    assert err.count("Unknown Error") == 1


def test_assert_merges_identical_differences(tmp_path: Path, config_file: str) -> None:
    """Four GPUs that differ the same way: one line on stderr naming them."""
    state = node(tmp_path)
    code, out, err = cli("--sim-state", state, "assert", "-f", config_file, "-c", "all-balanced")
    assert code == 1
    assert err.splitlines() == [
        "GPU 0, 1, 2, 3: does not match: MIG mode is disabled, wanted enabled",
        "Assertion failure: selected configuration not currently applied",
    ]
    assert out == ""


@given(st.lists(st.tuples(st.integers(0, 15), st.sampled_from(["a", "b", "c on GPU 3"])), max_size=30))
def test_merging_names_every_gpu_once_per_distinct_text(items: list[tuple[int, str]]) -> None:
    """Each distinct text becomes one line; every GPU that had it is listed, in index order."""
    from migkit.execution.report import merge_by_gpu

    lines = merge_by_gpu(items)
    assert len(lines) == len(set(lines))
    for line in lines:
        head, _, text = line.partition(": ")
        indices = [int(i) for i in head.removeprefix("GPU ").split(", ")]
        assert indices == sorted(set(indices))
        assert set(indices) == {i for i, t in items if re.sub(rf"\bGPU {i}(?:: |\b)", "", t) == text}


# --------------------------------------------------------------------------- 4. streams


def test_apply_errors_and_warnings_go_to_stderr_results_to_stdout(tmp_path: Path, config_file: str) -> None:
    """A failed apply: the table and counts on stdout, the errors and verdict on stderr."""
    state = node(tmp_path)
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    code, out, err = cli(
        "--sim-state", state, "apply", "-f", config_file, "-c", "all-disabled", faults=ALL_SET_MODE_FAIL
    )
    assert code == 1
    assert "Unknown Error" not in out and "NOT applied" not in out and "error" not in out
    assert "Unknown Error" in err and err.rstrip().endswith("MIG configuration NOT applied")
    assert table_rows(out) == [0, 1, 2, 3]

    filtered = tmp_path / "filtered.yaml"
    filtered.write_text(
        "version: v1\nmig-configs:\n  a30s:\n    - device-filter: \"0x20B710DE\"\n"
        "      devices: all\n      mig-enabled: true\n      mig-devices: {1g.6gb: 4}\n"
    )
    code, out, err = cli("--sim-state", state, "apply", "-f", str(filtered), "-c", "a30s")
    assert code == 0
    assert "warning:" in err and "warning:" not in out


def test_restore_errors_go_to_stderr(tmp_path: Path, config_file: str) -> None:
    """A failed restore: errors and verdict on stderr, the table on stdout."""
    state = node(tmp_path)
    checkpoint = tmp_path / "before.json"
    assert cli("--sim-state", state, "checkpoint", "-f", str(checkpoint))[0] == 0
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    code, out, err = cli("--sim-state", state, "restore", "-f", str(checkpoint), faults=ALL_SET_MODE_FAIL)
    assert code == 1
    assert "Unknown Error" in err and "Unknown Error" not in out
    assert err.rstrip().endswith("MIG configuration NOT restored")
    assert table_rows(out) == [0, 1, 2, 3]


def test_json_stays_alone_on_stdout(tmp_path: Path, config_file: str) -> None:
    """``-o json``: stdout is exactly the JSON report; no headline, progress or table."""
    state = node(tmp_path)
    code, out, err = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced", "-o", "json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert [g["index"] for g in report["gpus"]] == [0, 1, 2, 3] and report["changed"] == 4


# --------------------------------------------------------------------------- 5. closing phrases


def test_closing_phrases_are_upstreams(tmp_path: Path, config_file: str) -> None:
    """Success ends with upstream's words on stdout; assert -a says the selection is valid."""
    state = node(tmp_path)
    code, out, _ = cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")
    assert code == 0 and out.splitlines()[-1] == "MIG configuration applied successfully"
    code, out, _ = cli("--sim-state", state, "assert", "-f", config_file, "-c", "all-balanced")
    assert code == 0 and out.splitlines()[-1] == "Selected MIG configuration currently applied"
    code, out, _ = cli("--sim-state", state, "assert", "-a", "-f", config_file, "-c", "all-balanced")
    assert code == 0 and out.splitlines()[-1] == "Selected MIG configuration is valid"
    with _env("MIGKIT_SIM_STATE", None):
        code, out, _ = cli("assert", "-a", "-f", config_file, "-c", "all-balanced")
    assert code == 0 and out.splitlines() == ["Selected MIG configuration is valid"]


# --------------------------------------------------------------------------- 6. restore


def test_restore_lists_each_gpu_once_and_summarises(tmp_path: Path, config_file: str) -> None:
    """A restore that changes mode and instances: each GPU once on stdout, then a summary."""
    state = node(tmp_path)
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    checkpoint = tmp_path / "balanced.json"
    assert cli("--sim-state", state, "checkpoint", "-f", str(checkpoint))[0] == 0
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-disabled")[0] == 0
    code, out, _ = cli("--sim-state", state, "restore", "-f", str(checkpoint))
    assert code == 0
    for index in range(4):
        assert per_gpu_mentions(out, index) == 1, out
    assert table_rows(out) == [0, 1, 2, 3]
    lines = out.splitlines()
    assert lines[0] == f"Restoring checkpoint {checkpoint} to 4 GPUs: 4 change, 0 already match"
    assert lines[-2:] == ["4 GPU(s) changed, 0 unchanged", "MIG configuration restored successfully"]


# --------------------------------------------------------------------------- 7. -d


def _debug_lines(err: str) -> list[str]:
    return [line.removeprefix("debug: ") for line in err.splitlines() if line.startswith("debug: ")]


def test_debug_logs_nvml_batches_plan_decisions_and_phase_timings(tmp_path: Path, config_file: str) -> None:
    """``-d`` logs on stderr each NVML batch (function, GPU, items, time), each GPU's plan
    decision (kept, destroyed, created, why) and each phase's time; stdout has none of it."""
    state = node(tmp_path, "2xh100-80gb")
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    code, out, err = cli("--sim-state", state, "-d", "apply", "-f", config_file, "-c", "all-1g.10gb")
    assert code == 0 and "debug:" not in out
    logged = _debug_lines(err)
    seconds = r"\d+\.\d{3} s"
    for index in (0, 1):
        assert any(
            re.fullmatch(rf"nvml destroy_gpu_instances on GPU {index}: 2 item\(s\), 2 result\(s\) in {seconds}", line)
            for line in logged
        ), logged
        assert any(
            re.fullmatch(rf"nvml create_gpu_instances on GPU {index}: 5 item\(s\), 5 result\(s\) in {seconds}", line)
            for line in logged
        ), logged
        plan = next(line for line in logged if line.startswith(f"plan GPU {index}: "))
        assert "kept: 1g.10gb@2:1, 1g.10gb@3:1 (already where wanted)" in plan
        assert "destroyed: 2g.20gb@0:2, 3g.40gb@4:4 (not in the planned layout)" in plan
        assert "created: 1g.10gb@0:1, 1g.10gb@1:1, 1g.10gb@4:1, 1g.10gb@5:1, 1g.10gb@6:1" in plan
    for name in ("read and plan", "instance changes", "verification"):
        assert any(re.fullmatch(rf"phase {name}: {seconds}", line) for line in logged), logged
    assert any(re.fullmatch(rf"nvml snapshot: 2 GPU\(s\) in {seconds}", line) for line in logged)


def test_debug_logging_ends_with_the_command(tmp_path: Path, config_file: str) -> None:
    """After a ``-d`` run in this process, a run without it logs nothing."""
    state = node(tmp_path, "1xh100-80gb")
    assert _debug_lines(cli("--sim-state", state, "-d", "apply", "-f", config_file, "-c", "all-balanced")[2])
    assert not _debug_lines(cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-1g.10gb")[2])


def test_the_report_summary_for_logs_merges_and_has_no_table(tmp_path: Path, config_file: str) -> None:
    """``ApplyReport.summary()`` (what the agent puts in an event) stays short: the same failure
    on four GPUs is one line, with no table, then the verdict."""
    state = node(tmp_path)
    assert cli("--sim-state", state, "apply", "-f", config_file, "-c", "all-balanced")[0] == 0
    with _env("MIGKIT_SIM_FAULTS", ALL_SET_MODE_FAIL), migkit.open_node(sim_state=state) as n:
        report = apply(n, load_config(config_file), "all-disabled", progress=io.StringIO())
    lines = report.summary().splitlines()
    assert lines[0].startswith("GPU 0, 1, 2, 3: restored - failed setting the MIG mode")
    assert lines[1:] == ["0 GPU(s) changed, 0 unchanged", "MIG configuration NOT applied"]
