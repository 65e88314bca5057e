"""A state file the simulator cannot use is named, with its line, and never hangs or leaks.

A state file the C reader rejects makes ``migkit`` exit 2 with ``FILE:LINE: reason`` (the
Python API raises :class:`~migkit.errors.SimulatorStateError`); a FIFO, a device or a
directory given as the state file is refused at once; rewriting a state file keeps its
permission mode, and the temporary file beside it is never a symlink's target.
"""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
from collections.abc import Callable

import pytest

from migkit import simulator
from migkit.errors import ConfigError, SimulatorStateError
from migkit.nvml.node import MigModeRequest, open_node


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``migkit ARGS`` in a fresh interpreter (the NVML library is per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "MIG_PARTED_"))}
    return subprocess.run(
        [sys.executable, "-m", "migkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def _fresh(tmp_path: object, spec: str = "1xh100-80gb") -> str:
    path = os.path.join(str(tmp_path), "node.state")
    simulator.write_state(path, spec)
    return path


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().splitlines(keepends=True)


def _write(path: str, lines: list[bytes]) -> None:
    with open(path, "wb") as f:
        f.write(b"".join(lines))


def _line_of(lines: list[bytes], prefix: bytes) -> int:
    return next(i for i, line in enumerate(lines) if line.startswith(prefix))


def unknown_gi_profile(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    at = _line_of(lines, b"gip ") + 1
    lines.insert(at, b"gi gpu=0 id=1 profile=77 start=0 size=4\n")
    return lines, at + 1, "unknown GPU-instance profile"


def cut_line(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    at = _line_of(lines, b"cip ")
    lines[at] = lines[at][: lines[at].index(b" index=")] + b" ind\n"
    return lines, at + 1, "'index'"


def nul_byte(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    at = _line_of(lines, b"gpu ")
    lines[at] = lines[at].replace(b"memory=", b"memory=8\x00")
    return lines, at + 1, "NUL"


def overflowing_number(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    at = _line_of(lines, b"gip ")
    lines[at] = lines[at].replace(b" instances=", b" instances=99999999999999999999999 x=")
    return lines, at + 1, "'instances'"


def truncated(lines: list[bytes]) -> tuple[list[bytes], int, str]:
    at = _line_of(lines, b"gip ") + 2
    lines = lines[: at + 1]
    lines[at] = lines[at][: lines[at].index(b" id=") + 2]
    return lines, at + 1, "truncated"


CORRUPTIONS: list[Callable[[list[bytes]], tuple[list[bytes], int, str]]] = [
    unknown_gi_profile,
    cut_line,
    nul_byte,
    overflowing_number,
    truncated,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_a_state_file_the_simulator_rejects_exits_2_naming_file_and_line(
    tmp_path: object, corrupt: Callable[[list[bytes]], tuple[list[bytes], int, str]]
) -> None:
    """migkit exits 2 with FILE:LINE: and the reason, not 1 with 'Driver Not Loaded'."""
    path = _fresh(tmp_path)
    lines, line, reason = corrupt(_lines(path))
    _write(path, lines)
    result = run_cli("--sim-state", path, "export")
    assert result.returncode == 2, result.stderr
    assert f"{path}:{line}: " in result.stderr
    assert reason in result.stderr
    assert "Driver Not Loaded" not in result.stderr


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
def test_opening_a_rejected_state_file_raises_a_config_error(
    tmp_path: object, corrupt: Callable[[list[bytes]], tuple[list[bytes], int, str]]
) -> None:
    """open_node(sim_state=FILE) raises SimulatorStateError (a ConfigError) with file and line."""
    path = _fresh(tmp_path)
    lines, line, reason = corrupt(_lines(path))
    _write(path, lines)
    with pytest.raises(SimulatorStateError) as info:
        open_node(sim_state=path)
    assert isinstance(info.value, ConfigError)
    assert (info.value.file, info.value.line) == (path, line)
    assert reason in info.value.reason


def test_a_state_file_spoilt_while_open_fails_the_next_snapshot(tmp_path: object) -> None:
    """A snapshot does not quietly report the last good state of a file that no longer parses."""
    path = _fresh(tmp_path)
    with open_node(sim_state=path) as node:
        assert len(node.snapshot()) == 1
        lines, line, _ = overflowing_number(_lines(path))
        _write(path, lines)
        with pytest.raises(SimulatorStateError) as info:
            node.snapshot()
        assert (info.value.file, info.value.line) == (path, line)


@pytest.mark.parametrize("kind", ["fifo", "directory", "/dev/zero", "/dev/urandom"])
def test_a_special_file_as_state_file_is_refused_at_once(tmp_path: object, kind: str) -> None:
    """A FIFO, a directory or a device is exit 2 naming it, quickly (no hang, no MemoryError)."""
    if kind == "fifo":
        path = os.path.join(str(tmp_path), "node.state")
        os.mkfifo(path)
    elif kind == "directory":
        path = os.path.join(str(tmp_path), "node.state")
        os.mkdir(path)
    else:
        path = kind
    for args in (("--sim-state", path, "export"), ("--sim-state", path, "--simulate", "1xh100-80gb", "export")):
        result = run_cli(*args, timeout=30)
        assert result.returncode == 2, result.stderr
        assert path in result.stderr
        assert "not a regular file" in result.stderr
        assert "Traceback" not in result.stderr
    if kind.startswith("/dev/"):
        assert not os.path.exists(path + ".lock")


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_rewriting_a_state_file_keeps_its_mode(tmp_path: object, mode: int) -> None:
    """Both writers (the C library on a mutating call, the Python side) keep the file's mode."""
    path = _fresh(tmp_path, "2xh100-80gb")
    os.chmod(path, mode)
    with open_node(sim_state=path) as node:
        (result,) = node.set_mig_mode([MigModeRequest(0, 1)])
        assert result.ok
    assert "mode=1" in pathlib.Path(path).read_text()
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    simulator.reset_gpus(path, [1])
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def _plant_symlink(path: str) -> tuple[str, str]:
    victim = path + ".victim"
    with open(victim, "w") as f:
        f.write("precious\n")
    link = f"{path}.tmp.{os.getpid()}"
    os.symlink(victim, link)
    return victim, link


def test_the_c_writer_never_writes_through_a_symlinked_temp_file(tmp_path: object) -> None:
    """A symlink at <state>.tmp.<pid> is not followed: its target keeps its content."""
    path = _fresh(tmp_path)
    victim, _ = _plant_symlink(path)
    with open_node(sim_state=path) as node:
        (result,) = node.set_mig_mode([MigModeRequest(0, 1)])
    assert pathlib.Path(victim).read_text() == "precious\n"
    assert result.ok
    assert "mode=1" in pathlib.Path(path).read_text()


def test_the_python_writer_never_writes_through_a_symlinked_temp_file(tmp_path: object) -> None:
    """The same for the Python side's rewrite (here a simulated reset)."""
    path = _fresh(tmp_path)
    victim, _ = _plant_symlink(path)
    simulator.reset_gpus(path, [0])
    assert pathlib.Path(victim).read_text() == "precious\n"
    assert simulator.read_state(path)[0].keyword == "migkit-sim"


def test_temporary_files_of_dead_writers_are_removed(tmp_path: pathlib.Path) -> None:
    """A ``<state>.tmp.<pid>`` left by a writer killed mid-write is removed by the next write;
    one of a live process, and a symlink's target, are left alone."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"n.state.tmp.{dead.pid}"
    stale.write_text("half a state file")
    target = tmp_path / "target"
    target.write_text("keep me")
    dead_link = tmp_path / f"n.state.tmp.{dead.pid + 1_000_000}"
    dead_link.symlink_to(target)
    alive = tmp_path / f"n.state.tmp.{os.getppid()}"
    alive.write_text("a live writer's")
    simulator.write_state(state, "1xh100-80gb")
    assert not stale.exists() and not os.path.lexists(dead_link)
    assert target.read_text() == "keep me" and alive.exists()
