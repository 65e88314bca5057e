"""Entries that cover no GPU of the node are said out loud, never silently skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from migkit import simulator
from migkit.cli import main
from migkit.config import ConfigEntry, load_config
from migkit.config.filters import DeviceFilter
from migkit.errors import ConfigError
from migkit.hardware import gpu_model
from migkit.planning.coverage import effective_specs

H100 = gpu_model("h100-80gb")
A30 = gpu_model("a30-24gb")
A30_FILTER = f"0x{A30.pci_device_id:08X}"


def _entry(devices: object, filters: tuple[str, ...] = ()) -> ConfigEntry:
    return ConfigEntry(
        devices=devices,  # type: ignore[arg-type]
        mig_enabled=True,
        mig_devices={"1g.10gb": 7},
        device_filters=tuple(DeviceFilter.parse(f) for f in filters),
    )


def test_filter_matching_no_gpu_of_the_node_warns_or_fails_under_strict() -> None:
    """A config whose only entry is filtered to a model the node lacks warns; strict refuses."""
    entries = [_entry("all", (A30_FILTER,))]
    coverage = effective_specs(entries, [H100, H100])
    assert [g.status for g in coverage.gpus] == ["not covered", "not covered"]
    (warning,) = coverage.warnings
    assert A30_FILTER in warning and f"0x{H100.pci_device_id:08X}" in warning
    with pytest.raises(ConfigError, match="matches no GPU"):
        effective_specs(entries, [H100, H100], strict_coverage=True)


def test_listed_devices_the_filter_excludes_warn_or_fail_under_strict() -> None:
    """`devices: [0]` with a filter GPU 0 does not match covers nothing: a warning, strict an error."""
    entries = [_entry("all"), _entry((0,), (A30_FILTER,))]
    coverage = effective_specs(entries, [H100])
    (warning,) = coverage.warnings
    assert "entry 1 covers no GPU" in warning
    with pytest.raises(ConfigError, match="entry 1 covers no GPU"):
        effective_specs(entries, [H100], strict_coverage=True)


def test_per_model_entries_beside_a_covering_one_say_nothing() -> None:
    """NVIDIA's layout (one filtered entry per model) is quiet where one entry covers the node."""
    entries = [_entry("all", (A30_FILTER,)), _entry("all", (f"0x{H100.pci_device_id:08X}",))]
    coverage = effective_specs(entries, [H100], strict_coverage=True)
    assert coverage.warnings == ()
    assert coverage.gpus[0].entry_index == 1


def test_nvidia_default_config_is_quiet_under_strict_coverage() -> None:
    """Every config of the GPU Operator's default file plans on an H100 node without a coverage problem."""
    path = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
    config = load_config(path / "gpu-operator-default-mig-parted-config.yaml")
    for name, entries in config.configs.items():
        coverage = effective_specs(entries, [H100] * 8)
        if any(g.covered for g in coverage.gpus):
            assert not [w for w in coverage.warnings if "covers no GPU" in w or "matches no GPU" in w], name


def test_apply_cli_warns_about_a_filter_matching_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply prints the warning and exits 0 (nothing to do); --strict-coverage exits 2."""
    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: v1\nmig-configs:\n  a30s:\n"
        f"    - device-filter: \"{A30_FILTER}\"\n      devices: all\n      mig-enabled: true\n"
        '      mig-devices: {"1g.6gb": 4}\n'
    )
    assert main(["--sim-state", state, "apply", "-f", str(config), "-c", "a30s"]) == 0
    assert "matches no GPU" in capsys.readouterr().err  # warnings go to stderr
    code = main(["--sim-state", state, "apply", "--strict-coverage", "-f", str(config), "-c", "a30s"])
    assert code == 2
    assert f"{config}:4" in capsys.readouterr().err
    assert not simulator.stats(state).get("nvmlDeviceSetMigMode")
