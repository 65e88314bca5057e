"""`migkit status` shows the layout as it is; `migkit configs` lists a file's configs and what fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migkit import simulator
from migkit.cli import main
from migkit.nvml.node import open_node

CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  mixed:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1g.10gb": 2, "3g.40gb": 1}
    - devices: [1]
      mig-enabled: false
  a100-only:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 7}
  too-many:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 3}
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    return simulator.write_state(tmp_path / "node.state", "2xh100-80gb")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_status_lists_instances_placements_uuids_and_pids(
    node: str, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every GI and CI of the snapshot appears with its placement, UUID and PIDs; a summary ends it."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    with open_node(sim_state=node) as handle:
        gpu0 = handle.snapshot()[0]
    busy_gi = next(gi for gi in gpu0.gpu_instances if gi.profile == "3g.40gb")
    simulator.mark_busy(node, gpu0.index, busy_gi.id, busy_gi.compute_instances[0].id, pid=4242)
    capsys.readouterr()
    assert main(["--sim-state", node, "status"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("GPU 0: NVIDIA H100 80GB HBM3 (h100-80gb)") and out[0].endswith("MIG enabled")
    for gi in gpu0.gpu_instances:
        gi_line = next(line for line in out if line.startswith(f"  GI {gi.id} "))
        assert gi.profile in gi_line and f"placement {gi.start}:{gi.size}" in gi_line
        for ci in gi.compute_instances:
            assert any(ci.uuid in line for line in out)
    assert any("in use by PID 4242" in line for line in out)
    assert any(line.startswith("GPU 1: ") and line.endswith("MIG disabled") for line in out)
    assert out[-1] == "2 GPUs: 1 MIG-enabled, 1 disabled; 3 GPU instances, 3 MIG devices, 1 in use"


def test_status_json_agrees_with_the_snapshot(node: str, cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """-o json carries the same GIs, CIs, UUIDs and a summary, GPUs in PCI order."""
    assert main(["--sim-state", node, "apply", "-f", cfg, "-c", "mixed"]) == 0
    capsys.readouterr()
    assert main(["--sim-state", node, "status", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    with open_node(sim_state=node) as handle:
        gpus = handle.snapshot()
    assert [g["uuid"] for g in document["gpus"]] == [g.uuid for g in gpus]
    got = {
        (gi["profile"], gi["placement"]["start"], gi["placement"]["size"])
        for gi in document["gpus"][0]["gpu_instances"]
    }
    assert got == {(gi.profile, gi.start, gi.size) for gi in gpus[0].gpu_instances}
    uuids = {ci["uuid"] for gi in document["gpus"][0]["gpu_instances"] for ci in gi["compute_instances"]}
    assert uuids == {ci.uuid for gi in gpus[0].gpu_instances for ci in gi.compute_instances}
    assert document["summary"]["mig_devices"] == 3 and document["summary"]["mig_enabled"] == 1


def test_status_shows_a_pending_mode(tmp_path: Path, cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """On Ampere a mode change waits for a reset: shown on the GPU line and in the summary."""
    node = simulator.write_state(tmp_path / "a100.state", "1xa100-40gb")
    assert main(["--sim-state", node, "apply", "--mode-only", "--skip-reset", "-f", cfg, "-c", "a100-only"]) == 0
    capsys.readouterr()
    assert main(["--sim-state", node, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("MIG disabled (enabled after a reset)")
    assert lines[-1] == "1 GPU: 0 MIG-enabled, 1 disabled, 1 pending a reset; 0 GPU instances, 0 MIG devices, 0 in use"


def test_configs_lists_every_config_and_what_fits_the_node(
    node: str, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each config appears once with its entries; fits/no against the node, with the reason."""
    assert main(["--sim-state", node, "configs", "-f", cfg, "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    verdicts = {c["name"]: c["fits"] for c in document["configs"]}
    assert verdicts == {"all-disabled": True, "mixed": True, "a100-only": False, "too-many": False}
    mixed = next(c for c in document["configs"] if c["name"] == "mixed")
    assert mixed["entries"][0] == {"devices": [0], "mig-enabled": True, "mig-devices": {"1g.10gb": 2, "3g.40gb": 1}}
    a100 = next(c for c in document["configs"] if c["name"] == "a100-only")
    assert "1g.5gb" in a100["reason"]
    assert main(["--sim-state", node, "configs", "-f", cfg]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == "4 configs, 2 fit"


def test_configs_against_bundled_models_needs_no_node(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--gpu MODEL checks offline: on an A100-40GB, a100-only fits and mixed does not."""
    assert main(["configs", "-f", cfg, "--gpu", "a100-40gb", "--gpu", "a100-40gb", "-o", "json"]) == 0
    verdicts = {c["name"]: c["fits"] for c in json.loads(capsys.readouterr().out)["configs"]}
    assert verdicts["a100-only"] is True and verdicts["mixed"] is False
    assert main(["configs", "-f", cfg, "--no-check"]) == 0
    assert "fits" not in capsys.readouterr().out
