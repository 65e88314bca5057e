"""The apply lock: never follows a planted link, lives in a private directory on a real node,
and keeps the modes it finds."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import attrs
import pytest

from migkit import simulator
from migkit.cli import main
from migkit.errors import ApplyError
from migkit.execution.host import DEFAULT_LOCK_DIR, LOCK_DIR_ENV, lock_path, node_lock

CONFIG = (
    "version: v1\nmig-configs:\n  mig:\n    - devices: all\n      mig-enabled: true\n"
    '      mig-devices: {"3g.40gb": 2}\n'
)


@pytest.fixture
def node(tmp_path: Path) -> tuple[str, str]:
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    return state, str(config)


def _mutations(state: str) -> int:
    return sum(v for k, v in simulator.stats(state).items() if "Create" in k or "Destroy" in k or "SetMig" in k)


def test_symlinked_lock_is_refused_and_its_target_untouched(
    tmp_path: Path, node: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A symbolic link at <state>.apply.lock is refused; the file it points to keeps its bytes."""
    state, config = node
    victim = tmp_path / "precious"
    victim.write_text("do not truncate\n")
    os.symlink(victim, state + ".apply.lock")
    assert main(["--sim-state", state, "apply", "-f", config, "-c", "mig"]) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert victim.read_text() == "do not truncate\n"
    assert _mutations(state) == 0


@pytest.mark.parametrize("kind", ["fifo", "hardlink", "directory"])
def test_lock_that_is_not_a_plain_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A FIFO, a second name of another file or a directory at the lock path is refused at once."""
    path = tmp_path / "x.apply.lock"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "hardlink":
        other = tmp_path / "other"
        other.write_text("keep\n")
        os.link(other, path)
    else:
        path.mkdir()
    with pytest.raises(ApplyError, match=r"refusing the lock file|cannot open the lock file"), node_lock(str(path)):
        pass
    if kind == "hardlink":
        assert (tmp_path / "other").read_text() == "keep\n"


def test_new_lock_file_is_0600_and_an_existing_mode_is_kept(tmp_path: Path) -> None:
    """A lock created by migkit is 0600; one that exists keeps its mode; the pid is removed after."""
    fresh = tmp_path / "a.apply.lock"
    with node_lock(str(fresh)):
        assert fresh.read_text() == str(os.getpid())
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert fresh.read_text() == ""
    kept = tmp_path / "b.apply.lock"
    kept.write_text("")
    kept.chmod(0o640)
    with node_lock(str(kept)):
        pass
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640


@attrs.frozen
class _RealNode:
    state_file: str | None = None
    is_simulated: bool = False


def test_real_node_lock_lives_in_a_private_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real node's lock is <dir>/apply.lock, the directory created 0700 and the file 0600."""
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    assert lock_path(_RealNode()) == os.path.join(DEFAULT_LOCK_DIR, "apply.lock")  # type: ignore[arg-type]
    directory = tmp_path / "run-migkit"
    monkeypatch.setenv(LOCK_DIR_ENV, str(directory))
    path = lock_path(_RealNode())  # type: ignore[arg-type]
    assert path == str(directory / "apply.lock")
    with node_lock(path, private_directory=True):
        pass
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600


@pytest.mark.parametrize("kind", ["world-writable", "symlink"])
def test_lock_directory_others_can_write_is_refused(tmp_path: Path, kind: str) -> None:
    """A lock directory anyone else could write to (or a link to one) is refused before any change."""
    directory = tmp_path / "locks"
    if kind == "world-writable":
        directory.mkdir()
        directory.chmod(0o1777)
    else:
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        directory.symlink_to(real)
    with pytest.raises(ApplyError, match="lock directory"), node_lock(
        str(directory / "apply.lock"), private_directory=True
    ):
        pass
    assert not (directory / "apply.lock").exists()
