"""Files migkit is given are regular files of bounded size: a FIFO or a device named as a
config or hooks file is refused at once (exit 2, the file named), and ``--simulate`` with an
existing state file of another shape is an error rather than silently ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migkit import simulator
from migkit.errors import ConfigError
from migkit.files import read_text

CONFIG = "version: v1\nmig-configs:\n  all-disabled:\n    - devices: all\n      mig-enabled: false\n"


def _migkit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MIGKIT_", "MIG_PARTED_"))}
    return subprocess.run(
        [sys.executable, "-m", "migkit", *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.fixture
def node(tmp_path: Path) -> tuple[str, str]:
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    return state, str(config)


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("role", ["config", "hooks"])
def test_a_fifo_or_device_is_refused_at_once(tmp_path: Path, node: tuple[str, str], kind: str, role: str) -> None:
    """A FIFO (which would block) or /dev/zero (which never ends) exits 2 naming the file."""
    state, config = node
    special = "/dev/zero"
    if kind == "fifo":
        special = str(tmp_path / "pipe")
        os.mkfifo(special)
    args = ["-f", special] if role == "config" else ["-f", config, "-k", special]
    result = _migkit("--sim-state", state, "apply", *args, "-c", "all-disabled")
    assert result.returncode == 2, result.stderr
    assert special in result.stderr and "must be a regular file" in result.stderr
    assert simulator.stats(state).get("nvmlDeviceSetMigMode", 0) == 0


def test_a_file_over_its_size_cap_is_refused(tmp_path: Path) -> None:
    """A file larger than its cap is an error naming it, whatever its content."""
    big = tmp_path / "big.yaml"
    big.write_text("#" * 2048)
    with pytest.raises(ConfigError, match="larger than 1024 bytes") as err:
        read_text(big, limit=1024, what="the file")
    assert err.value.file == str(big)
    assert read_text(big, limit=4096, what="the file") == "#" * 2048


def test_simulate_with_a_state_file_of_another_shape_is_an_error(node: tuple[str, str]) -> None:
    """--simulate naming another node than the existing state file exits 2 and says both."""
    state, _ = node
    other = _migkit("--simulate", "2xa100-40gb", "--sim-state", state, "export")
    assert other.returncode == 2
    assert "2xa100-40gb" in other.stderr and "NVIDIA H100 80GB HBM3" in other.stderr
    same = _migkit("--simulate", "1xh100-80gb", "--sim-state", state, "export")
    assert same.returncode == 0 and same.stderr == ""
