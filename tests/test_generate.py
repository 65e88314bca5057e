"""generate_config: the generated configs of mig-parted v0.14+ (its expected outputs and mixed nodes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pytest
import yaml

from builders import gpu_state
from migkit.config import load_config, select
from migkit.errors import MigkitError
from migkit.generate import (
    GenerateError,
    NoMigCapableGpuError,
    NoProfilesDiscoveredError,
    config_name,
    generate_config,
    render,
)
from migkit.hardware import gpu_model
from migkit.models import GpuModel, GpuState, Placement, Profile
from migkit.planning.coverage import effective_specs
from migkit.planning.solver import solve

BASE_CONFIGS = {
    "all-disabled": [{"devices": "all", "mig-enabled": False, "mig-devices": {}}],
    "all-enabled": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}],
}


def configs(gpus: Sequence[GpuModel] | Sequence[GpuState]) -> dict[str, list[dict[str, Any]]]:
    doc = generate_config(gpus)
    assert doc["version"] == "v1"
    result: dict[str, list[dict[str, Any]]] = doc["mig-configs"]
    return result


def unfiltered(
    per_profile: Mapping[str, int], balanced: Mapping[str, int] | None
) -> dict[str, Any]:
    """The expected document body of a homogeneous node."""
    expected: dict[str, Any] = dict(BASE_CONFIGS)
    for name, count in per_profile.items():
        expected[config_name(name)] = [
            {"devices": "all", "mig-enabled": True, "mig-devices": {name: count}}
        ]
    if balanced is not None:
        expected["all-balanced"] = [
            {"devices": "all", "mig-enabled": True, "mig-devices": dict(balanced)}
        ]
    return expected


def profile(name: str, count: int, memory_mib: int = 1024, index: int = 0) -> Profile:
    """A synthetic GPU-instance profile; only name, G and count matter to generation."""
    g = int(name.split("g.")[0].split(".")[-1])
    return Profile(
        id=index,
        index=index,
        name=name,
        slice_count=g,
        memory_slices=g,
        instance_count=count,
        memory_mib=memory_mib,
        multiprocessors=16 * g,
        placements=(Placement(0, g),),
    )


def synthetic(name: str, device_id: int, rows: Sequence[tuple[str, int]]) -> GpuModel:
    base = gpu_model("h100-80gb")
    return attrs.evolve(
        base,
        name=name,
        pci_device_id=device_id,
        profiles=tuple(profile(n, c, index=i) for i, (n, c) in enumerate(rows)),
    )


def state_of(model: GpuModel, index: int = 0) -> GpuState:
    return gpu_state(model, index)


# --------------------------------------------------------------------------- single GPU types

SINGLE_MODEL_CASES = [
    (
        "a100-40gb",
        {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
        {
            "1g.5gb": 7,
            "1g.5gb+me": 1,
            "1g.10gb": 4,
            "2g.10gb": 3,
            "3g.20gb": 2,
            "4g.20gb": 1,
            "7g.40gb": 1,
        },
    ),
    (
        "a100-80gb",
        {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        {
            "1g.10gb": 7,
            "1g.10gb+me": 1,
            "1g.20gb": 4,
            "2g.20gb": 3,
            "3g.40gb": 2,
            "4g.40gb": 1,
            "7g.80gb": 1,
        },
    ),
    (
        "h100-80gb",
        {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        {
            "1g.10gb": 7,
            "1g.10gb+me": 1,
            "1g.20gb": 4,
            "2g.20gb": 3,
            "3g.40gb": 2,
            "4g.40gb": 1,
            "7g.80gb": 1,
        },
    ),
    (
        "h100-nvl-94gb",
        {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1},
        {
            "1g.12gb": 7,
            "1g.12gb+me": 1,
            "1g.24gb": 4,
            "2g.24gb": 3,
            "3g.47gb": 2,
            "4g.47gb": 1,
            "7g.94gb": 1,
        },
    ),
    (
        "gh200-96gb",
        {"1g.12gb": 2, "2g.24gb": 1, "3g.48gb": 1},
        {
            "1g.12gb": 7,
            "1g.12gb+me": 1,
            "1g.24gb": 4,
            "2g.24gb": 3,
            "3g.48gb": 2,
            "4g.48gb": 1,
            "7g.96gb": 1,
        },
    ),
    (
        "h200-141gb",
        {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1},
        {
            "1g.18gb": 7,
            "1g.18gb+me": 1,
            "1g.35gb": 4,
            "2g.35gb": 3,
            "3g.71gb": 2,
            "4g.71gb": 1,
            "7g.141gb": 1,
        },
    ),
    (
        "b200-180gb",
        {"1g.23gb": 2, "2g.45gb": 1, "3g.90gb": 1},
        {
            "1g.23gb": 7,
            "1g.23gb+me": 1,
            "1g.45gb": 4,
            "2g.45gb": 3,
            "3g.90gb": 2,
            "4g.90gb": 1,
            "7g.180gb": 1,
        },
    ),
    (
        "a30-24gb",
        {"1g.6gb": 2, "2g.12gb": 1},
        {"1g.6gb": 4, "1g.6gb+me": 1, "2g.12gb": 2, "2g.12gb+me": 1, "4g.24gb": 1},
    ),
    (
        "rtx-pro-6000",
        {"1g.24gb": 2, "2g.48gb": 1},
        {
            "1g.24gb": 4,
            "1g.24gb+me": 1,
            "1g.24gb+gfx": 4,
            "1g.24gb+me.all": 1,
            "1g.24gb-me": 4,
            "2g.48gb": 2,
            "2g.48gb+gfx": 2,
            "2g.48gb+me.all": 1,
            "2g.48gb-me": 2,
            "4g.96gb": 1,
            "4g.96gb+gfx": 1,
        },
    ),
]


@pytest.mark.parametrize(("model", "balanced", "per_profile"), SINGLE_MODEL_CASES)
def test_bundled_model_generates_upstreams_configs(
    model: str, balanced: dict[str, int], per_profile: dict[str, int]
) -> None:
    """Each bundled MIG model yields exactly upstream's expected configs, counts and no filters."""
    assert configs([gpu_model(model)]) == unfiltered(per_profile, balanced)


def test_eight_identical_gpus_generate_the_same_as_one() -> None:
    """A homogeneous 8-GPU node has one entry per config and no device filters."""
    assert configs([gpu_model("a100-40gb")] * 8) == configs([gpu_model("a100-40gb")])


def test_rtx_pro_5000_has_no_balanced_config_without_a_base_2g() -> None:
    """A device type whose only 2g profile carries an attribute gets no all-balanced."""
    model = synthetic(
        "rtx-pro-5000",
        0x2BB410DE,
        [
            ("1g.12gb", 1),
            ("1g.12gb+me", 1),
            ("1g.12gb+gfx", 1),
            ("1g.12gb-me", 3),
            ("2g.24gb-me", 1),
            ("4g.48gb", 1),
            ("4g.48gb+gfx", 1),
        ],
    )
    result = configs([model])
    assert "all-balanced" not in result
    assert result["all-2g.24gb-me"] == [
        {"devices": "all", "mig-enabled": True, "mig-devices": {"2g.24gb-me": 1}}
    ]


def test_two_slot_gpu_has_no_balanced_config() -> None:
    """Only 7- and 4-slot device types have a balanced formula."""
    model = synthetic("two-slot", 0x2B0010DE, [("1g.16gb", 2), ("2g.32gb", 1)])
    assert configs([model]) == unfiltered({"1g.16gb": 2, "2g.32gb": 1}, None)


def test_config_names_replace_plus_with_dot_and_keep_minus() -> None:
    """Normalisation: `+` becomes `.`, `-` stays (as upstream names its all-<profile> configs)."""
    assert config_name("1g.10gb") == "all-1g.10gb"
    assert config_name("1g.10gb+me") == "all-1g.10gb.me"
    assert config_name("4g.96gb+gfx") == "all-4g.96gb.gfx"
    assert config_name("1g.24gb+me.all") == "all-1g.24gb.me.all"
    assert config_name("1g.24gb-me") == "all-1g.24gb-me"


def test_config_names_come_out_sorted() -> None:
    """The mig-configs keys are in sorted order, as the YAML library prints them upstream."""
    names = list(configs([gpu_model("a100-80gb"), gpu_model("a30-24gb")]))
    assert names == sorted(names)


# --------------------------------------------------------------------------- mixed nodes


def test_same_profiles_on_two_types_share_entries_with_both_ids() -> None:
    """A100-80GB + H100 (test ID 0x233110DE): one entry per profile filtered by both IDs."""
    a100 = attrs.evolve(gpu_model("a100-80gb"), pci_device_id=0x20B510DE)
    h100 = attrs.evolve(gpu_model("h100-80gb"), pci_device_id=0x233110DE)
    result = configs([a100, h100])
    both = ["0x20B510DE", "0x233110DE"]
    for name, count in SINGLE_MODEL_CASES[1][2].items():
        assert result[config_name(name)] == [
            {
                "device-filter": both,
                "devices": "all",
                "mig-enabled": True,
                "mig-devices": {name: count},
            }
        ]
    balanced = {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    assert result["all-balanced"] == [
        {"device-filter": [id_], "devices": "all", "mig-enabled": True, "mig-devices": balanced}
        for id_ in both
    ]
    assert result["all-disabled"] == BASE_CONFIGS["all-disabled"]
    assert result["all-enabled"] == BASE_CONFIGS["all-enabled"]


def test_different_profiles_on_two_types_get_separate_configs() -> None:
    """A100-80GB + A30: each type's configs carry only its own ID."""
    result = configs([gpu_model("a100-80gb"), gpu_model("a30-24gb")])
    a100, a30 = ["0x20B210DE"], ["0x20B710DE"]
    assert result["all-1g.6gb"] == [
        {"device-filter": a30, "devices": "all", "mig-enabled": True, "mig-devices": {"1g.6gb": 4}}
    ]
    assert result["all-1g.10gb"] == [
        {
            "device-filter": a100,
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 7},
        }
    ]
    assert result["all-balanced"] == [
        {
            "device-filter": a100,
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        },
        {
            "device-filter": a30,
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.6gb": 2, "2g.12gb": 1},
        },
    ]


def test_same_profile_with_different_counts_gets_one_entry_per_count() -> None:
    """1g.10gb x7 on one type and x4 on another: two entries, count ascending, no balanced."""
    seven = synthetic("seven", 0x20B510DE, [("1g.10gb", 7)])
    four = synthetic("four", 0x20B210DE, [("1g.10gb", 4)])
    result = configs([seven, four])
    assert result["all-1g.10gb"] == [
        {
            "device-filter": ["0x20B210DE"],
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 4},
        },
        {
            "device-filter": ["0x20B510DE"],
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 7},
        },
    ]
    assert "all-balanced" not in result


def test_non_mig_gpus_are_skipped_and_do_not_make_a_node_heterogeneous() -> None:
    """An L40S beside H100s neither adds configs nor forces device filters."""
    assert configs([gpu_model("h100-80gb"), gpu_model("l40s")]) == configs([gpu_model("h100-80gb")])


def test_live_snapshot_and_bundled_models_generate_the_same() -> None:
    """GpuState input (a snapshot) gives the same document as the matching GpuModels."""
    models = [gpu_model("a100-80gb"), gpu_model("a30-24gb"), gpu_model("l40s")]
    states = [state_of(m, i) for i, m in enumerate(models)]
    assert generate_config(states) == generate_config(models)


def test_a30_uses_the_fixed_table_whatever_nvml_reports() -> None:
    """An A30 whose driver reports other instance counts, or none, still gets the fixed table."""
    a30 = gpu_model("a30-24gb")
    wrong = attrs.evolve(
        a30, profiles=tuple(attrs.evolve(p, instance_count=7) for p in a30.profiles)
    )
    empty = attrs.evolve(a30, profiles=())
    expected = configs([a30])
    assert configs([wrong]) == expected
    assert configs([state_of(empty)]) == expected


def test_balanced_prefers_the_highest_count_then_the_smaller_memory() -> None:
    """Per G the profile with most instances wins; a tie goes to the smaller memory."""
    model = synthetic(
        "ties",
        0x123410DE,
        [
            ("1g.20gb", 4),
            ("1g.10gb", 4),
            ("1g.5gb", 2),
            ("2g.20gb", 3),
            ("3g.40gb", 2),
            ("7g.80gb", 1),
        ],
    )
    assert configs([model])["all-balanced"] == [
        {
            "devices": "all",
            "mig-enabled": True,
            "mig-devices": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
        }
    ]


# --------------------------------------------------------------------------- errors and output


def test_node_without_mig_capable_gpus_is_an_error() -> None:
    """Only non-MIG GPUs (or none at all) raise NoMigCapableGpuError, a GenerateError."""
    with pytest.raises(NoMigCapableGpuError, match="no MIG-capable GPU"):
        generate_config([gpu_model("l40s")])
    with pytest.raises(NoMigCapableGpuError):
        generate_config([])
    assert issubclass(NoMigCapableGpuError, GenerateError)
    assert issubclass(GenerateError, MigkitError)


def test_mig_capable_gpus_without_profiles_raise_a_distinct_error() -> None:
    """MIG-capable GPUs listing no profiles (R535 with MIG off) raise NoProfilesDiscoveredError."""
    bare = state_of(attrs.evolve(gpu_model("h100-80gb"), profiles=()))
    with pytest.raises(NoProfilesDiscoveredError, match="no MIG profiles discovered"):
        generate_config([bare, bare])
    assert not issubclass(NoProfilesDiscoveredError, NoMigCapableGpuError)


def test_gpu_without_profiles_is_skipped_beside_one_with_profiles() -> None:
    """A capable GPU listing no profiles does not count towards heterogeneity."""
    bare = attrs.evolve(gpu_model("a100-80gb"), profiles=())
    assert configs([gpu_model("h100-80gb"), bare]) == configs([gpu_model("h100-80gb")])


def test_rendered_yaml_uses_flow_filters_and_loads_back() -> None:
    """YAML output prints filter lists inline, quotes IDs and parses back to the document."""
    doc = generate_config([gpu_model("a100-80gb"), gpu_model("a30-24gb")])
    text = render(doc, "yaml")
    assert "  all-balanced:\n  - device-filter: ['0x20B210DE']\n    devices: all\n" in text
    assert "      1g.10gb+me: 1\n" in text
    assert yaml.safe_load(text) == doc


# --------------------------------------------------------------------------- round trip


GENERATED_NODES = {
    "8xa100-40gb": ["a100-40gb"] * 8,
    "h100+l40s": ["h100-80gb", "h100-80gb", "l40s"],
    "a100-80gb+a30": ["a100-80gb", "a100-80gb", "a30-24gb", "a30-24gb"],
    "every-mig-model": [
        "a100-40gb",
        "a100-80gb",
        "a30-24gb",
        "b200-180gb",
        "gh200-96gb",
        "h100-80gb",
        "h100-nvl-94gb",
        "h200-141gb",
        "rtx-pro-6000",
    ],
}


@pytest.mark.parametrize("node", sorted(GENERATED_NODES))
def test_every_generated_config_loads_and_fits_the_gpus_it_covers(node: str) -> None:
    """Each generated config parses, and its counts can be placed on every GPU it covers."""
    models = [gpu_model(name) for name in GENERATED_NODES[node]]
    loaded = load_config(render(generate_config(models), "yaml"))
    assert not loaded.warnings
    for name in loaded.configs:
        coverage = effective_specs(select(loaded, name).entries, models)
        assert not coverage.warnings
        for model, covered in zip(models, coverage.gpus, strict=True):
            if covered.entry is None or not covered.covered or not covered.entry.mig_enabled:
                continue
            solve(model, covered.entry.mig_devices)  # raises when infeasible


def test_generated_configs_cover_exactly_the_gpu_types_that_offer_the_profile() -> None:
    """On A100-80GB + A30, all-1g.6gb covers only the A30s and all-balanced covers all."""
    models = [gpu_model(n) for n in ("a100-80gb", "a30-24gb", "a100-80gb", "l40s")]
    loaded = load_config(render(generate_config(models), "json"))
    statuses = {
        name: [g.status for g in effective_specs(select(loaded, name).entries, models).gpus]
        for name in ("all-1g.6gb", "all-1g.10gb", "all-balanced", "all-enabled", "all-disabled")
    }
    assert statuses == {
        "all-1g.6gb": ["not covered", "covered", "not covered", "not covered"],
        "all-1g.10gb": ["covered", "not covered", "covered", "not covered"],
        "all-balanced": ["covered", "covered", "covered", "not covered"],
        "all-enabled": ["covered", "covered", "covered", "skipped"],
        "all-disabled": ["covered"] * 4,
    }
