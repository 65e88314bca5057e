"""export_config: per-GPU specs merged as upstream's export merges them, and rendering."""

from __future__ import annotations

import json
from collections.abc import Sequence

import attrs
import pytest
import yaml

from builders import gpu_state, instances_of
from migkit.config import load_config, select
from migkit.export import export_config, gpu_mig_devices, render
from migkit.models import GpuModel, GpuState
from migkit.planning.coverage import effective_specs

A = "0x20B010DE"  # A100-SXM4-40GB
B = "0x233010DE"  # H100 80GB HBM3


def gpu(
    model: str | GpuModel,
    enabled: bool = False,
    instances: Sequence[tuple[str, Sequence[str]]] = (),
    index: int = 0,
) -> GpuState:
    """A GpuState of a bundled model with GIs ``(gi_profile, [ci_profiles])`` in order."""
    return gpu_state(model, index, enabled=enabled, instances=instances_of(model, instances, index))


def entries(gpus: Sequence[GpuState]) -> list[dict[str, object]]:
    doc = export_config(gpus)
    assert doc["version"] == "v1"
    assert list(doc["mig-configs"]) == ["current"]
    result: list[dict[str, object]] = doc["mig-configs"]["current"]
    return result


OFF: dict[str, object] = {"mig-enabled": False, "mig-devices": {}}
ON: dict[str, object] = {"mig-enabled": True, "mig-devices": {}}


# --------------------------------------------------------------------------- merge table (upstream export/config.go)


def test_no_gpus_export_an_empty_list() -> None:
    """A node without GPUs exports a config with no entries."""
    assert entries([]) == []


def test_single_disabled_gpu_exports_devices_all_without_filter() -> None:
    """One disabled GPU becomes one `devices: all` entry with no filter."""
    assert entries([gpu("a100-40gb")]) == [{"devices": "all", **OFF}]


def test_two_disabled_gpus_of_one_type_merge_into_devices_all() -> None:
    """Equal specs on one device type merge into a single `devices: all` entry."""
    assert entries([gpu("a100-40gb"), gpu("a100-40gb")]) == [{"devices": "all", **OFF}]


def test_different_specs_on_one_type_keep_index_lists_and_drop_filters() -> None:
    """With one device ID on the node, differing specs list indices and carry no filter."""
    result = entries([gpu("a100-40gb"), gpu("a100-40gb", enabled=True)])
    assert result == [{"devices": [0], **OFF}, {"devices": [1], **ON}]


def test_equal_specs_on_two_types_merge_into_one_unfiltered_entry() -> None:
    """A single remaining entry drops its filter list even across device types."""
    assert entries([gpu("a100-40gb"), gpu("h100-80gb")]) == [{"devices": "all", **OFF}]


def test_one_spec_per_type_prints_scalar_filters_and_devices_all() -> None:
    """Entries each covering all GPUs of one type get a scalar filter and `devices: all`."""
    result = entries(
        [
            gpu("a100-40gb"),
            gpu("a100-40gb"),
            gpu("h100-80gb", enabled=True),
            gpu("h100-80gb", enabled=True),
        ]
    )
    assert result == [
        {"device-filter": A, "devices": "all", **OFF},
        {"device-filter": B, "devices": "all", **ON},
    ]


def test_specs_shared_across_types_keep_filter_lists_and_index_lists() -> None:
    """Entries spanning both types but not all their GPUs keep filter lists and indices."""
    result = entries(
        [
            gpu("a100-40gb"),
            gpu("a100-40gb", enabled=True),
            gpu("h100-80gb"),
            gpu("h100-80gb", enabled=True),
        ]
    )
    assert result == [
        {"device-filter": [A, B], "devices": [0, 2], **OFF},
        {"device-filter": [A, B], "devices": [1, 3], **ON},
    ]


# --------------------------------------------------------------------------- per-GPU content


def test_full_gi_compute_instances_count_under_the_gi_name() -> None:
    """A CI covering its whole GI counts under the GI profile's name."""
    state = gpu(
        "h100-80gb",
        enabled=True,
        instances=[
            ("3g.40gb", ["3g.40gb"]),
            ("2g.20gb", ["2g.20gb"]),
            ("1g.10gb", ["1g.10gb"]),
            ("1g.10gb", ["1g.10gb"]),
        ],
    )
    assert gpu_mig_devices(state) == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}


def test_partial_compute_instances_count_under_their_ci_names() -> None:
    """CIs smaller than their GI count as `1c.3g.40gb`-style names, one per CI."""
    state = gpu(
        "h100-80gb",
        enabled=True,
        instances=[
            ("3g.40gb", ["1c.3g.40gb", "1c.3g.40gb", "1c.3g.40gb"]),
            ("3g.40gb", ["2c.3g.40gb"]),
        ],
    )
    assert gpu_mig_devices(state) == {"1c.3g.40gb": 3, "2c.3g.40gb": 1}


def test_gpu_instances_without_compute_instances_contribute_nothing() -> None:
    """An orphan GI (no CIs) is invisible in the exported counts, as upstream reads state."""
    state = gpu("a100-40gb", enabled=True, instances=[("3g.20gb", []), ("1g.5gb", ["1g.5gb"])])
    assert entries([state]) == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 1}}
    ]


def test_nvml_style_ci_names_are_canonicalised() -> None:
    """A CI reported as `1c.1g.5gb` counts as `1g.5gb`."""
    state = gpu("a100-40gb", enabled=True, instances=[("1g.5gb", ["1g.5gb"])])
    gi = state.gpu_instances[0]
    ci = attrs.evolve(gi.compute_instances[0], profile="1c.1g.5gb")
    state = attrs.evolve(state, gpu_instances=(attrs.evolve(gi, compute_instances=(ci,)),))
    assert gpu_mig_devices(state) == {"1g.5gb": 1}


def test_non_mig_capable_gpus_export_as_disabled() -> None:
    """A GPU without MIG support exports `mig-enabled: false` and groups with disabled GPUs."""
    result = entries([gpu("h100-80gb", enabled=True), gpu("l40s"), gpu("h100-80gb")])
    assert result == [
        {"device-filter": B, "devices": [0], **ON},
        {"device-filter": [B, "0x26B910DE"], "devices": [1, 2], **OFF},
    ]


def test_gpu_index_is_the_position_in_the_snapshot() -> None:
    """`devices` uses positions in the (PCI-ordered) tuple, not the NVML index field."""
    result = entries([gpu("a100-40gb", index=5), gpu("a100-40gb", enabled=True, index=3)])
    assert result == [{"devices": [0], **OFF}, {"devices": [1], **ON}]


def test_label_names_the_single_exported_config() -> None:
    """The config is called by the given label (mig-parted's `-l`)."""
    assert list(export_config([gpu("a30-24gb")], label="saved")["mig-configs"]) == ["saved"]


def test_entries_keep_upstreams_key_order() -> None:
    """Keys come out as device-filter, devices, mig-enabled, mig-devices."""
    result = entries([gpu("a100-40gb"), gpu("h100-80gb", enabled=True)])
    assert [list(entry) for entry in result] == [
        ["device-filter", "devices", "mig-enabled", "mig-devices"]
    ] * 2


# --------------------------------------------------------------------------- rendering


def mixed_node_doc() -> dict[str, object]:
    return export_config(
        [
            gpu("a100-40gb"),
            gpu(
                "a100-40gb",
                enabled=True,
                instances=[("3g.20gb", ["1c.3g.20gb"]), ("1g.5gb", ["1g.5gb"])],
            ),
            gpu("h100-80gb"),
            gpu("h100-80gb", enabled=True, instances=[("3g.40gb", ["1c.3g.40gb"])]),
            gpu("h100-80gb", enabled=True, instances=[("3g.40gb", ["1c.3g.40gb"])]),
        ]
    )


def test_yaml_prints_devices_and_filters_in_flow_style() -> None:
    """YAML shows `devices` and `device-filter` lists inline and mappings in block style."""
    text = render(mixed_node_doc(), "yaml")
    assert text.startswith("version: v1\nmig-configs:\n  current:\n  - device-filter: ")
    assert "  - device-filter: ['0x20B010DE', '0x233010DE']\n    devices: [0, 2]\n" in text
    assert (
        "    devices: [3, 4]\n    mig-enabled: true\n    mig-devices:\n      1c.3g.40gb: 1\n"
        in text
    )
    assert "device-filter: '0x20B010DE'\n    devices: [1]\n" in text


def test_yaml_and_json_load_back_to_the_same_document() -> None:
    """Both renderings parse back (YAML 1.1 safe_load, JSON) to the exported document."""
    doc = mixed_node_doc()
    assert yaml.safe_load(render(doc, "yaml")) == doc
    assert json.loads(render(doc, "json")) == doc


def test_json_is_indented_and_keeps_key_order() -> None:
    """JSON output is indented by two spaces with upstream's key order."""
    text = render(export_config([gpu("a30-24gb")]), "json")
    assert text.startswith('{\n  "version": "v1",\n  "mig-configs": {\n    "current": [\n')
    assert text.index('"devices"') < text.index('"mig-enabled"') < text.index('"mig-devices"')
    assert text.endswith("}\n")


def test_unknown_output_format_is_rejected() -> None:
    """Only yaml and json are accepted."""
    with pytest.raises(ValueError, match="xml"):
        render(export_config([]), "xml")


# --------------------------------------------------------------------------- round trip


ROUND_TRIP_NODES = {
    "homogeneous-mixed-layouts": [
        gpu("h100-80gb", enabled=True, instances=[("1g.10gb", ["1g.10gb"])] * 7),
        gpu("h100-80gb", enabled=True, instances=[("1g.10gb", ["1g.10gb"])] * 7),
        gpu("h100-80gb"),
        gpu("h100-80gb", enabled=True, instances=[("3g.40gb", ["1c.3g.40gb", "2c.3g.40gb"])]),
    ],
    "two-types-and-a-display-gpu": [
        gpu("a100-40gb"),
        gpu("a100-40gb", enabled=True, instances=[("3g.20gb", ["3g.20gb"]), ("1g.5gb", [])]),
        gpu("h100-80gb"),
        gpu("h100-80gb", enabled=True),
        gpu("l40s"),
    ],
    "one-spec-per-type": [
        gpu("a30-24gb"),
        gpu("a30-24gb"),
        gpu("a100-80gb", enabled=True, instances=[("7g.80gb", ["7g.80gb"])]),
    ],
}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize("node", sorted(ROUND_TRIP_NODES))
def test_exported_config_loads_back_and_selects_each_gpus_own_state(node: str, fmt: str) -> None:
    """load_config reads the export, and every GPU's effective spec is its exported state."""
    gpus = ROUND_TRIP_NODES[node]
    loaded = load_config(render(export_config(gpus, label="snapshot"), fmt))
    assert not loaded.warnings
    selected = select(loaded)
    assert selected.name == "snapshot"
    coverage = effective_specs(selected.entries, gpus, strict_coverage=True)
    assert not coverage.warnings
    for state, covered in zip(gpus, coverage.gpus, strict=True):
        assert covered.status == "covered"
        assert covered.entry is not None
        enabled = state.mig_capable and state.mig_enabled
        assert covered.entry.mig_enabled == enabled
        assert dict(covered.entry.mig_devices) == (gpu_mig_devices(state) if enabled else {})
