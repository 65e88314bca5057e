"""`devices: [i]` means the i-th GPU in PCI bus order, as in nvidia-mig-parted."""

from __future__ import annotations

from pathlib import Path

import migkit
from migkit import simulator
from migkit.cli import main


def test_config_indices_follow_pci_order_not_nvml_order(tmp_path: Path) -> None:
    """When NVML's order differs from PCI order, index 0 is the GPU with the lowest bus id."""
    state = simulator.write_state(tmp_path / "n.state", "2xh100-80gb")
    with simulator.edit_state(state) as records:
        gpus = [r for r in records if r.keyword == "gpu"]
        gpus[0].fields["bus"], gpus[1].fields["bus"] = "00000000:9A:00.0", "00000000:18:00.0"
    with migkit.open_node(sim_state=state) as node:
        snapshot = node.snapshot()
    assert [g.bus_id.upper() for g in snapshot] == ["00000000:18:00.0", "00000000:9A:00.0"]
    assert [g.index for g in snapshot] == [1, 0]  # NVML indices, used for every NVML call
    cfg = tmp_path / "c.yaml"
    cfg.write_text("version: v1\nmig-configs:\n  one:\n    - devices: [0]\n      mig-enabled: true\n"
                   '      mig-devices: {"7g.80gb": 1}\n')
    assert main(["--sim-state", state, "apply", "-f", str(cfg)]) == 0
    with migkit.open_node(sim_state=state) as node:
        by_nvml_index = {g.index: g for g in node.snapshot()}
    assert by_nvml_index[1].device_counts() == {"7g.80gb": 1}  # bus 18: config index 0
    assert not by_nvml_index[0].mig_enabled
    assert main(["--sim-state", state, "assert", "-f", str(cfg)]) == 0
