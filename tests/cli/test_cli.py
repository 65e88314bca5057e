"""The command line: upstream spellings and variables, hooks order, checkpoint/restore,
offline commands, and exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

import migkit
from builders import mutations
from migkit import simulator
from migkit.cli import main
from migkit.execution import host

BALANCED = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  all-3g:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    return simulator.write_state(tmp_path / "node.state", "2xh100-80gb")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(BALANCED)
    return str(path)


def mutating_calls(state: str) -> int:
    return sum(mutations(state).values())


def test_version_and_help_exit_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints the version; no command is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert migkit.__version__ in capsys.readouterr().out
    assert main([]) == 2


def test_upstream_environment_variables_select_file_and_config(
    node: str, cfg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MIG_PARTED_CONFIG_FILE and MIG_PARTED_SELECTED_CONFIG stand in for -f and -c."""
    monkeypatch.setenv("MIG_PARTED_CONFIG_FILE", cfg)
    monkeypatch.setenv("MIG_PARTED_SELECTED_CONFIG", "all-balanced")
    assert main(["--sim-state", node, "apply"]) == 0
    assert main(["--sim-state", node, "assert"]) == 0


def test_debug_flag_is_accepted_before_and_after_the_command(node: str, cfg: str) -> None:
    """`-d apply ...` (as the MIG manager calls it) and `apply -d ...` both work."""
    assert main(["-d", "--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 0
    assert main(["--sim-state", node, "assert", "-d", "--mode-only", "-f", cfg, "-c", "all-balanced"]) == 0


def test_selection_errors_exit_2(node: str, cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing -f, several configs without -c, or an unknown name are usage errors."""
    assert main(["--sim-state", node, "apply", "-c", "all-balanced"]) == 2
    assert main(["--sim-state", node, "apply", "-f", cfg]) == 2
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balancd"]) == 2
    assert 'did you mean "all-balanced"' in capsys.readouterr().err
    assert mutating_calls(node) == 0


def test_valid_config_checks_without_hardware(cfg: str, tmp_path: Path) -> None:
    """assert --valid-config checks the file and selection only."""
    assert main(["assert", "--valid-config", "-f", cfg, "-c", "all-balanced"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n")
    assert main(["assert", "--valid-config", "-f", str(bad), "-c", "x"]) == 2


def test_dry_run_prints_the_plan_and_changes_nothing(node: str, cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """apply --dry-run shows placements and issues no mutating NVML call."""
    assert main(["--sim-state", node, "apply", "--dry-run", "-f", cfg, "-c", "all-balanced"]) == 0
    out = capsys.readouterr().out
    assert "3g.40gb" in out and "GPU 1" in out
    assert mutating_calls(node) == 0


def _hook_script(tmp_path: Path, log: Path) -> str:
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\necho \"$1 $MIG_PARTED_SELECTED_CONFIG\" >> {log}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _hooks_file(tmp_path: Path, script: str) -> str:
    hooks = tmp_path / "hooks.yaml"
    names = ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")
    body = "".join(f"  {n}:\n    - command: {script}\n      args: [{n}]\n" for n in names)
    hooks.write_text("version: v1\nhooks:\n" + body)
    return str(hooks)


def test_hooks_run_in_upstream_order_only_when_needed(node: str, cfg: str, tmp_path: Path) -> None:
    """Hooks run in mig-parted's order; pre-apply-* only when something has to change."""
    log = tmp_path / "hooks.log"
    hooks = _hooks_file(tmp_path, _hook_script(tmp_path, log))
    assert main(["--sim-state", node, "apply", "-k", hooks, "-f", cfg, "-c", "all-balanced"]) == 0
    assert log.read_text().splitlines() == [
        "apply-start all-balanced", "pre-apply-mode all-balanced",
        "pre-apply-config all-balanced", "apply-exit all-balanced",
    ]
    log.write_text("")
    assert main(["--sim-state", node, "apply", "-k", hooks, "-f", cfg, "-c", "all-balanced"]) == 0
    assert log.read_text().splitlines() == ["apply-start all-balanced", "apply-exit all-balanced"]


def test_failing_start_hook_stops_before_any_change(node: str, cfg: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A failing apply-start aborts with exit 1, nothing changed, and the hook's stderr shown."""
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho 'kubelet would not stop' >&2\nexit 3\n")
    script.chmod(0o755)
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text(f"version: v1\nhooks:\n  apply-start:\n    - command: {script}\n")
    assert main(["--sim-state", node, "apply", "-k", str(hooks), "-f", cfg, "-c", "all-balanced"]) == 1
    err = capsys.readouterr()
    assert "kubelet would not stop" in err.out + err.err
    assert mutating_calls(node) == 0


def test_checkpoint_and_restore_exact_placements(node: str, cfg: str, tmp_path: Path) -> None:
    """restore brings back the checkpointed instances at exactly their placements."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 0
    with migkit.open_node(sim_state=node) as n:
        before = [sorted((gi.profile_id, gi.start, gi.size) for gi in g.gpu_instances) for g in n.snapshot()]
    saved = tmp_path / "checkpoint.json"
    assert main(["--sim-state", node, "checkpoint", "-f", str(saved)]) == 0
    assert json.loads(saved.read_text())["version"] == "v1"
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-disabled"]) == 0
    assert main(["--sim-state", node, "restore", "-f", str(saved)]) == 0
    with migkit.open_node(sim_state=node) as n:
        gpus = n.snapshot()
    assert [sorted((gi.profile_id, gi.start, gi.size) for gi in g.gpu_instances) for g in gpus] == before
    assert all(g.device_counts() == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1} for g in gpus)
    calls = mutating_calls(node)
    assert main(["--sim-state", node, "restore", "-f", str(saved)]) == 0
    assert mutating_calls(node) == calls  # already restored: nothing touched


def test_export_round_trips_through_apply(node: str, cfg: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The exported config of a node asserts as applied on that node (YAML and JSON)."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 0
    for fmt in ("yaml", "json"):
        capsys.readouterr()
        assert main(["--sim-state", node, "export", "-o", fmt, "-l", "snap"]) == 0
        exported = tmp_path / f"export.{fmt}"
        exported.write_text(capsys.readouterr().out)
        assert main(["--sim-state", node, "assert", "-f", str(exported), "-c", "snap"]) == 0
    assert main(["--sim-state", node, "export", "-o", "xml"]) == 2


def test_generate_config_offline_and_on_a_node(node: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """generate-config works from bundled models and from the node, and can write a file."""
    assert main(["generate-config", "--gpu", "a100-40gb"]) == 0
    offline = capsys.readouterr().out
    assert "all-1g.5gb:" in offline and "all-balanced:" in offline
    out = tmp_path / "generated.yaml"
    assert main(["--sim-state", node, "generate-config", "-f", str(out)]) == 0
    assert "all-1g.10gb:" in out.read_text()


def test_plan_exit_codes(cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """plan exits 0 when the layout fits, 1 when it does not, 2 for a bad file."""
    assert main(["plan", "-f", cfg, "-c", "all-balanced", "--gpu", "h100-80gb"]) == 0
    assert "3g.40gb" in capsys.readouterr().out
    tight = tmp_path / "tight.yaml"
    tight.write_text("version: v1\nmig-configs:\n  t:\n    - devices: all\n      mig-enabled: true\n"
                     "      mig-devices: {\"3g.20gb\": 2, \"1g.5gb\": 1}\n")
    assert main(["plan", "-f", str(tight), "--gpu", "a100-40gb"]) == 1
    assert "memory slice" in capsys.readouterr().out
    assert main(["plan", "-f", str(tmp_path / "missing.yaml"), "--gpu", "a100-40gb"]) == 2


def test_profiles_lists_placements_like_nvidia_smi(capsys: pytest.CaptureFixture[str]) -> None:
    """profiles shows IDs, names and {starts}:size placements."""
    assert main(["profiles", "--gpu", "h100-80gb"]) == 0
    out = capsys.readouterr().out
    assert "{0,4}:4" in out and "{0,2,4,6}:2" in out and "1g.10gb+me" in out


def test_simulate_without_state_uses_a_fresh_node(capsys: pytest.CaptureFixture[str]) -> None:
    """--simulate alone gives a temporary node: fine for read-only commands."""
    assert main(["--simulate", "1xa30-24gb,1xl40s", "profiles"]) == 0
    out = capsys.readouterr().out
    assert "NVIDIA A30" in out and "MIG not supported" in out
    assert main(["--simulate", "3xnot-a-gpu", "profiles"]) == 2


def test_read_only_mode_refuses_apply(node: str, cfg: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """With MIGKIT_READ_ONLY=1 apply fails without any mutating NVML call."""
    monkeypatch.setenv("MIGKIT_READ_ONLY", "1")
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 1
    assert "MIGKIT_READ_ONLY is set" in capsys.readouterr().err
    assert mutating_calls(node) == 0
    monkeypatch.delenv("MIGKIT_READ_ONLY")
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 0
    monkeypatch.setenv("MIGKIT_READ_ONLY", "1")
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "all-balanced"]) == 0  # nothing to change


def test_reset_blockers_are_found_before_a_reset(tmp_path: Path) -> None:
    """nvidia_drm and nvidia-persistenced are named as reset blockers; a clean node has none."""
    proc = tmp_path / "proc"
    (proc / "4711").mkdir(parents=True)
    (proc / "4711" / "comm").write_text("nvidia-persiste\n")
    (proc / "12").mkdir()
    (proc / "12" / "comm").write_text("bash\n")
    (proc / "modules").write_text("nvidia_uvm 1 0 - Live 0x0\nnvidia_drm 2 3 - Live 0x0\nnvidia 5 1 - Live 0x0\n")
    found = host.reset_blockers(str(proc))
    assert any("nvidia_drm" in b for b in found)
    assert any("nvidia-persistenced" in b and "4711" in b for b in found)
    (proc / "modules").write_text("nvidia 5 1 - Live 0x0\n")
    (proc / "4711" / "comm").write_text("sshd\n")
    assert host.reset_blockers(str(proc)) == []


def test_a_file_that_is_not_a_simulated_node_is_a_usage_error(tmp_path: Path, cfg: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """--sim-state pointing at some other file exits 2 and says why."""
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    assert main(["--sim-state", str(other), "export"]) == 2
    assert "not a migkit simulator state file" in capsys.readouterr().err
