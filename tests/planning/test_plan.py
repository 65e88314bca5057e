"""Plans: mode changes and resets, destroy/create/keep per GPU, coverage, rendering."""

from __future__ import annotations

import json

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import gpu_state
from migkit.config import load_config
from migkit.errors import ConfigError, InfeasibleError, UnknownProfileError
from migkit.hardware import gpu_model
from migkit.models import (
    ComputeInstance,
    GpuInstance,
    GpuModel,
    GpuState,
)
from migkit.planning.coverage import GpuCoverage
from migkit.planning.plan import plan_gpu, plan_node, plan_offline, render_plan
from strategies import layout_instances, mig_models, oracle_max_kept, random_layouts

A100 = gpu_model("a100-40gb")
H100 = gpu_model("h100-80gb")
L40S = gpu_model("l40s")

CONFIG = load_config(
    """
version: v1
mig-configs:
  mixed:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}
    - device-filter: "0x233010DE"
      devices: all
      mig-enabled: true
      mig-devices: {"1c.3g.40gb": 4}
  all-off:
    - devices: all
      mig-enabled: false
  partial:
    - devices: [1]
      mig-enabled: true
      mig-devices: {"7g.80gb": 1}
  too-much:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.20gb": 2, "1g.5gb": 1}
  wrong-gpu:
    - devices: all
      mig-enabled: true
      mig-devices:
        "2g.10gb": 1
  explicit-l40s:
    - devices: [0]
      mig-enabled: true
      mig-devices: {}
""",
    name="node.yaml",
)


def state(
    model: GpuModel,
    index: int,
    enabled: bool,
    instances: tuple[GpuInstance, ...] = (),
    pending: bool | None = None,
) -> GpuState:
    return gpu_state(model, index, enabled=enabled, pending=pending, instances=instances)


def test_offline_plan_for_a_mixed_node() -> None:
    """Fresh GPUs: enable MIG (reset on Ampere only), create at the solver's placements."""
    node = plan_offline(CONFIG, "mixed", [A100, H100, L40S])
    a100, h100, l40s = node.gpus
    assert node.feasible and node.changes_anything
    assert a100.mode_change == "enable" and a100.reset_required
    assert h100.mode_change == "enable" and not h100.reset_required
    assert [(gi.profile, gi.start) for gi in a100.create_gpu_instances] == [
        ("2g.10gb", 0),
        ("1g.5gb", 2),
        ("1g.5gb", 3),
        ("3g.20gb", 4),
    ]
    assert [len(gi.compute_instances) for gi in h100.create_gpu_instances] == [3, 1]
    assert l40s.status == "skipped" and not l40s.changes_anything
    assert any("GPU 1 is covered by entries 0 and 1" in w for w in node.warnings)


def test_uncovered_gpus_are_listed_and_untouched() -> None:
    """GPUs outside the selected config are 'not covered' with no steps."""
    node = plan_offline(CONFIG, "partial", [H100, H100])
    assert [g.status for g in node.gpus] == ["not covered", "change"]
    assert not node.gpus[0].changes_anything
    assert "GPU 0: h100-80gb" in node.to_text() and "not covered; left untouched" in node.to_text()


def test_infeasible_gpu_is_reported_not_raised() -> None:
    """A request that does not fit marks that GPU and the node infeasible; raise on demand."""
    node = plan_offline(CONFIG, "too-much", [A100])
    assert not node.feasible and node.gpus[0].status == "infeasible"
    assert "memory slices 0-7" in node.gpus[0].error
    assert "does not fit:" in node.to_text()
    with pytest.raises(InfeasibleError, match="GPU 0 \\(a100-40gb, 0x20B010DE\\)"):
        node.raise_for_errors()


def test_unknown_profile_raises_with_file_position_and_gpu() -> None:
    """A profile a covered GPU lacks raises UnknownProfileError naming file:line, GPU, profile."""
    with pytest.raises(UnknownProfileError) as err:
        plan_offline(CONFIG, "wrong-gpu", [A100, H100])
    message = str(err.value)
    assert message.startswith("node.yaml:")
    assert "GPU 1 (h100-80gb, 0x233010DE)" in message and "'2g.10gb'" in message
    assert "Did you mean '2g.20gb'?" in message


def test_explicit_non_mig_gpu_is_a_config_error() -> None:
    """Listing a non-MIG GPU by index with MIG enabled fails before planning."""
    with pytest.raises(ConfigError, match="does not support MIG"):
        plan_offline(CONFIG, "explicit-l40s", [L40S])


def test_selection_errors_propagate() -> None:
    """An unknown config name is a ConfigError."""
    with pytest.raises(ConfigError, match='"nope" is not in the file'):
        plan_offline(CONFIG, "nope", [A100])


def test_matching_state_is_a_no_op() -> None:
    """A GPU already holding the request (in any CI spelling) changes nothing."""
    instances = layout_instances(
        A100, [("2g.10gb", 0), ("1g.5gb", 2), ("1g.5gb", 3), ("3g.20gb", 4)]
    )
    node = plan_node(CONFIG, "mixed", [state(A100, 0, True, instances)])
    gpu = node.gpus[0]
    assert gpu.status == "unchanged" and not gpu.changes_anything and len(gpu.kept) == 4
    assert "already as wanted" in node.to_text()
    assert "nothing to change" in node.to_text()


def test_partial_change_keeps_what_fits() -> None:
    """Going from 7 x 1g.5gb to {3g:1, 2g:1, 1g:2} keeps two 1g GIs and replaces the rest."""
    instances = layout_instances(A100, [("1g.5gb", s) for s in range(7)])
    node = plan_node(CONFIG, "mixed", [state(A100, 0, True, instances)])
    gpu = node.gpus[0]
    assert len(gpu.kept) == 2 and len(gpu.destroy_gpu_instances) == 5
    assert len(gpu.destroy_compute_instances) == 5
    assert {gi.profile for gi in gpu.create_gpu_instances} == {"3g.20gb", "2g.10gb"}
    assert gpu.mode_change is None and not gpu.reset_required
    assert [(gi.profile, gi.start) for gi in gpu.create_gpu_instances] == [
        ("2g.10gb", 2),
        ("3g.20gb", 4),
    ]


def test_disable_destroys_everything_and_refuses_in_use() -> None:
    """Disabling MIG destroys all CIs then GIs; an in-use GI makes that GPU infeasible."""
    instances = layout_instances(A100, [("3g.20gb", 0), ("3g.20gb", 4)])
    gpu = plan_node(CONFIG, "all-off", [state(A100, 0, True, instances)]).gpus[0]
    assert gpu.mode_change == "disable" and gpu.reset_required
    assert [d.gpu_instance_id for d in gpu.destroy_gpu_instances] == [1, 2]
    assert len(gpu.destroy_compute_instances) == 2
    busy = layout_instances(A100, [("3g.20gb", 0)], [True])
    gpu = plan_node(CONFIG, "all-off", [state(A100, 0, True, busy)]).gpus[0]
    assert gpu.status == "infeasible" and "in use" in gpu.error


def test_in_use_gpu_instance_blocks_a_change() -> None:
    """An in-use GI that the target cannot keep makes the GPU infeasible, naming it."""
    busy = layout_instances(A100, [("4g.20gb", 0)], [True])
    gpu = plan_node(CONFIG, "mixed", [state(A100, 0, True, busy)]).gpus[0]
    assert gpu.status == "infeasible"
    assert "4g.20gb (GPU instance 1) at memory slices 0-3 is in use" in gpu.error


def test_pending_mode_is_corrected() -> None:
    """A pending change the other way is undone with a mode set."""
    gpu = plan_node(CONFIG, "all-off", [state(H100, 0, False, pending=True)]).gpus[0]
    assert gpu.mode_change == "disable" and not gpu.reset_required


def test_already_disabled_is_unchanged() -> None:
    """MIG off and wanted off: nothing to do."""
    gpu = plan_node(CONFIG, "all-off", [state(A100, 0, False)]).gpus[0]
    assert gpu.status == "unchanged" and not gpu.changes_anything


def test_orphan_gi_is_destroyed_or_reused() -> None:
    """A GI without CIs is destroyed unless the target reuses it by adding its CIs."""
    orphan = GpuInstance(id=9, profile_id=14, profile="2g.10gb", start=0, size=2)
    gpu = plan_node(CONFIG, "mixed", [state(A100, 0, True, (orphan,))]).gpus[0]
    assert [gi.existing_id for gi in gpu.kept] == [9]
    assert [a.gpu_instance_id for a in gpu.add_compute_instances] == [9]
    assert gpu.changes_anything
    other = GpuInstance(id=9, profile_id=5, profile="4g.20gb", start=0, size=4)
    gpu = plan_node(CONFIG, "mixed", [state(A100, 0, True, (other,))]).gpus[0]
    assert [d.gpu_instance_id for d in gpu.destroy_gpu_instances] == [9]
    assert gpu.destroy_compute_instances == ()


def test_json_rendering_is_stable_and_complete() -> None:
    """The JSON form has stable keys tools can rely on."""
    node = plan_offline(CONFIG, "mixed", [A100, L40S])
    data = json.loads(render_plan(node, "json"))
    assert list(data) == ["config", "feasible", "changes_anything", "warnings", "gpus"]
    gpu = data["gpus"][0]
    assert list(gpu) == [
        "index",
        "model",
        "product_name",
        "pci_device_id",
        "pci_subsystem_id",
        "bus_id",
        "uuid",
        "status",
        "entry",
        "feasible",
        "changes_anything",
        "mig_mode",
        "current",
        "desired",
        "destroy",
        "create",
        "keep",
        "error",
        "notes",
    ]
    assert gpu["pci_device_id"] == "0x20B010DE"
    assert gpu["mig_mode"] == {
        "current": "disabled",
        "desired": "enabled",
        "change": "enable",
        "reset_required": True,
    }
    first = gpu["create"]["gpu_instances"][0]
    assert first["placement"] == {"start": 0, "size": 2} and first["profile_id"] == 14
    assert first["compute_instances"][0]["profile"] == "2g.10gb"
    assert data["gpus"][1]["status"] == "skipped"
    assert render_plan(node, "json") == render_plan(
        plan_offline(CONFIG, "mixed", [A100, L40S]), "json"
    )
    with pytest.raises(ValueError, match="unknown plan format"):
        render_plan(node, "xml")


def test_text_rendering_names_every_step() -> None:
    """The text form shows mode change, reset, creations with placements."""
    text = render_plan(plan_offline(CONFIG, "mixed", [A100]), "text")
    assert 'Plan for config "mixed" (1 GPU)' in text
    assert "MIG mode: disabled -> enabled (GPU reset required)" in text
    assert "create GPU instance 3g.20gb at memory slices 4-7 (placement 4:4, profile ID 9)" in text
    assert (
        "create compute instance 3g.20gb at compute slices 0-2 (placement 0:3, profile ID 2)"
        in text
    )
    assert text.endswith("result: fits\n")


def test_compute_instances_added_to_a_kept_gi_are_listed() -> None:
    """CIs created inside kept GIs show up as additions, with the GI id."""
    config = load_config(
        "version: v1\nmig-configs:\n  c:\n    - devices: all\n      mig-enabled: true\n"
        "      mig-devices: {1c.3g.40gb: 3}\n"
    )
    ci = ComputeInstance(id=0, profile_id=0, profile="1c.3g.40gb", start=0, size=1)
    gi = GpuInstance(
        id=2, profile_id=9, profile="3g.40gb", start=4, size=4, compute_instances=(ci,)
    )
    gpu = plan_node(config, None, [state(H100, 0, True, (gi,))]).gpus[0]
    assert [(a.gpu_instance_id, a.compute.start) for a in gpu.add_compute_instances] == [
        (2, 1),
        (2, 2),
    ]
    assert "in GPU instance 2 (3g.40gb) create compute instance 1c.3g.40gb" in render_plan(
        plan_node(config, None, [state(H100, 0, True, (gi,))])
    )


def test_plan_gpu_directly_from_a_model() -> None:
    """plan_gpu works from a model plus current instances and mode."""
    entry = CONFIG.configs["mixed"][0]
    coverage = GpuCoverage(0, "covered", entry, 0, (0,))
    plan = plan_gpu(
        A100, coverage, mig_enabled=True, instances=layout_instances(A100, [("7g.40gb", 0)])
    )
    assert [d.profile for d in plan.destroy_gpu_instances] == ["7g.40gb"]
    assert plan.layout is not None and dict(plan.layout.counts) == dict(entry.mig_devices)
    assert "no layout keeps any" in plan.notes[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), model=mig_models())
def test_plan_destroys_the_minimum(data: st.DataObject, model: GpuModel) -> None:
    """The number of GIs a plan destroys equals the brute-force minimum."""
    current = data.draw(random_layouts(model))
    target = data.draw(random_layouts(model))
    counts: dict[str, int] = {}
    for name, _ in target:
        counts[name] = counts.get(name, 0) + 1
    if not counts:
        return
    entry = attrs.evolve(CONFIG.configs["mixed"][0], mig_devices=counts)
    coverage = GpuCoverage(0, "covered", entry, 0, (0,))
    plan = plan_gpu(model, coverage, mig_enabled=True, instances=layout_instances(model, current))
    best = oracle_max_kept(model.name, counts, current)
    assert best is not None
    assert len(plan.destroy_gpu_instances) == len(current) - best
    assert plan.changes_anything == (len(current) != best or sum(counts.values()) != best)
