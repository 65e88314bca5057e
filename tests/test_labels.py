"""node_labels: GPU-feature-discovery labels, checked against the GPU Operator MIG docs."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from builders import gpu_state, instances_of
from migkit.hardware import gpu_model
from migkit.labels import (
    LabelError,
    label_profile_name,
    node_labels,
    product_label,
    single_strategy_problem,
)
from migkit.models import GpuState

H100 = "NVIDIA-H100-80GB-HBM3"


def gpu(
    model: str = "h100-80gb",
    layout: Sequence[tuple[str, Sequence[str]]] = (),
    enabled: bool | None = None,
    index: int = 0,
) -> GpuState:
    """A GpuState whose instances carry the values NVML reports for their MIG devices.

    ``layout`` lists GPU instances as ``(gi_profile, [ci_profiles])``; MIG is enabled when
    there are any, unless ``enabled`` says otherwise.
    """
    on = bool(layout) if enabled is None else enabled
    return gpu_state(model, index, enabled=on, instances=instances_of(model, layout, index))


def all_of(profile: str, count: int) -> list[tuple[str, list[str]]]:
    return [(profile, [profile])] * count


BALANCED = [
    ("3g.40gb", ["3g.40gb"]),
    ("2g.20gb", ["2g.20gb"]),
    ("1g.10gb", ["1g.10gb"]),
    ("1g.10gb", ["1g.10gb"]),
]


def assert_contains(labels: dict[str, str], expected: dict[str, str]) -> None:
    missing = {k: v for k, v in expected.items() if labels.get(k) != v}
    assert not missing, f"labels differ from the documented ones: {missing}"


# ------------------------------------------------------------------- the documented examples


def test_single_all_1g_10gb_matches_the_documented_labels() -> None:
    """H100 with seven 1g.10gb devices: the doc's single-strategy partial output, verbatim."""
    labels = node_labels(
        [gpu(layout=all_of("1g.10gb", 7))], "single", "all-1g.10gb", "success", present=True
    )
    assert_contains(
        labels,
        {
            "nvidia.com/gpu.count": "7",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": f"{H100}-MIG-1g.10gb",
            "nvidia.com/gpu.slices.ci": "1",
            "nvidia.com/gpu.slices.gi": "1",
            "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.config": "all-1g.10gb",
            "nvidia.com/mig.config.state": "success",
            "nvidia.com/mig.strategy": "single",
        },
    )


def test_single_strategy_also_carries_gfds_mig_device_attributes() -> None:
    """Under single, GFD labels the MIG device's memory, SMs and engines as gpu.* (full set)."""
    labels = node_labels([gpu(layout=all_of("1g.10gb", 7))], "single")
    assert labels == {
        "nvidia.com/gpu.count": "7",
        "nvidia.com/gpu.engines.copy": "1",
        "nvidia.com/gpu.engines.decoder": "1",
        "nvidia.com/gpu.engines.encoder": "0",
        "nvidia.com/gpu.engines.jpeg": "1",
        "nvidia.com/gpu.engines.ofa": "0",
        "nvidia.com/gpu.memory": "9984",
        "nvidia.com/gpu.multiprocessors": "16",
        "nvidia.com/gpu.product": f"{H100}-MIG-1g.10gb",
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/gpu.slices.ci": "1",
        "nvidia.com/gpu.slices.gi": "1",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/mps.capable": "false",
    }


def test_single_all_3g_40gb_matches_the_documented_labels() -> None:
    """The doc's reconfiguration example: two 3g.40gb devices, replicas 1, slices 3."""
    labels = node_labels(
        [gpu(layout=all_of("3g.40gb", 2))], "single", "all-3g.40gb", "success", present=True
    )
    assert_contains(
        labels,
        {
            "nvidia.com/gpu.count": "2",
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": f"{H100}-MIG-3g.40gb",
            "nvidia.com/gpu.replicas": "1",
            "nvidia.com/gpu.sharing-strategy": "none",
            "nvidia.com/gpu.slices.ci": "3",
            "nvidia.com/gpu.slices.gi": "3",
            "nvidia.com/mig.capable": "true",
            "nvidia.com/mig.config": "all-3g.40gb",
            "nvidia.com/mig.config.state": "success",
            "nvidia.com/mig.strategy": "single",
            "nvidia.com/mps.capable": "false",
        },
    )
    assert labels["nvidia.com/gpu.memory"] == "40320"


def test_single_strategy_with_mig_disabled_shows_the_whole_gpu() -> None:
    """The doc's all-disabled (and pending) output: plain product, replicas 1."""
    for config, state in (("all-disabled", "success"), ("all-1g.10gb", "pending")):
        labels = node_labels([gpu()], "single", config, state, present=True)
        assert_contains(
            labels,
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": H100,
                "nvidia.com/gpu.replicas": "1",
                "nvidia.com/gpu.sharing-strategy": "none",
                "nvidia.com/mig.capable": "true",
                "nvidia.com/mig.config": config,
                "nvidia.com/mig.config.state": state,
                "nvidia.com/mig.strategy": "single",
                "nvidia.com/mps.capable": "false",
            },
        )
        assert labels["nvidia.com/gpu.count"] == "1"
        assert labels["nvidia.com/gpu.memory"] == str(gpu_model("h100-80gb").memory_mib)
        assert not any(".slices." in key for key in labels)


def test_mixed_all_balanced_matches_the_documented_labels() -> None:
    """H100 all-balanced under mixed: every label of the doc's partial output, verbatim."""
    labels = node_labels(
        [gpu(layout=BALANCED)], "mixed", "all-balanced", "success", present=True
    )
    expected = {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": H100,
        "nvidia.com/gpu.replicas": "0",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.config": "all-balanced",
        "nvidia.com/mig.config.state": "success",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mps.capable": "false",
    }
    table = {
        # profile: count, copy, decoder, encoder, jpeg, ofa, memory, SMs, slices
        "1g.10gb": ("2", "1", "1", "0", "1", "0", "9984", "16", "1"),
        "2g.20gb": ("1", "2", "2", "0", "2", "0", "20096", "32", "2"),
        "3g.40gb": ("1", "3", "3", "0", "3", "0", "40320", "60", "3"),
    }
    for name, (count, copy, dec, enc, jpeg, ofa, mem, sms, slices) in table.items():
        key = f"nvidia.com/mig-{name}"
        expected.update(
            {
                f"{key}.count": count,
                f"{key}.engines.copy": copy,
                f"{key}.engines.decoder": dec,
                f"{key}.engines.encoder": enc,
                f"{key}.engines.jpeg": jpeg,
                f"{key}.engines.ofa": ofa,
                f"{key}.memory": mem,
                f"{key}.multiprocessors": sms,
                f"{key}.product": f"{H100}-MIG-{name}",
                f"{key}.replicas": "1",
                f"{key}.sharing-strategy": "none",
                f"{key}.slices.ci": slices,
                f"{key}.slices.gi": slices,
            }
        )
    assert_contains(labels, expected)
    # Beyond the doc's partial output, only GFD's whole-GPU count and memory are added.
    assert set(labels) - set(expected) == {"nvidia.com/gpu.count", "nvidia.com/gpu.memory"}
    assert labels["nvidia.com/gpu.count"] == "1"


# --------------------------------------------------------------------------- counts and spelling


def test_single_count_is_the_number_of_mig_devices_on_the_node() -> None:
    """Eight H100s with seven 1g.10gb each expose 56 nvidia.com/gpu resources."""
    node = [gpu(layout=all_of("1g.10gb", 7), index=i) for i in range(8)]
    assert node_labels(node, "single")["nvidia.com/gpu.count"] == "56"


def test_mixed_counts_profiles_across_gpus_and_gpus_for_gpu_count() -> None:
    """Mixed counts each profile over the node and counts whole GPUs under gpu.count."""
    node = [gpu(layout=BALANCED, index=0), gpu(layout=all_of("1g.10gb", 7), index=1)]
    labels = node_labels(node, "mixed")
    assert labels["nvidia.com/mig-1g.10gb.count"] == "9"
    assert labels["nvidia.com/mig-3g.40gb.count"] == "1"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["nvidia.com/gpu.replicas"] == "0"


def test_attribute_profiles_use_a_dot_in_label_keys_and_products() -> None:
    """`1g.10gb+me` is labelled `mig-1g.10gb.me` (a `+` is not legal in label keys)."""
    labels = node_labels([gpu(layout=[("1g.10gb+me", ["1g.10gb+me"])])], "mixed")
    assert labels["nvidia.com/mig-1g.10gb.me.count"] == "1"
    assert labels["nvidia.com/mig-1g.10gb.me.product"] == f"{H100}-MIG-1g.10gb.me"
    assert labels["nvidia.com/mig-1g.10gb.me.engines.ofa"] == "1"
    assert not any("+" in key or "+" in value for key, value in labels.items())
    assert label_profile_name("1g.24gb-me") == "1g.24gb-me"


def test_compute_instance_profiles_report_their_own_compute_slices() -> None:
    """A `1c.3g.40gb` device has slices.ci 1 and slices.gi 3, and its own SM count."""
    labels = node_labels([gpu(layout=[("3g.40gb", ["1c.3g.40gb"] * 3)])], "mixed")
    key = "nvidia.com/mig-1c.3g.40gb"
    assert labels[f"{key}.count"] == "3"
    assert labels[f"{key}.slices.ci"] == "1"
    assert labels[f"{key}.slices.gi"] == "3"
    assert labels[f"{key}.multiprocessors"] == "20"
    assert labels[f"{key}.product"] == f"{H100}-MIG-1c.3g.40gb"


def test_values_come_from_the_instances_not_the_profile_tables() -> None:
    """Memory, SMs and engines are what the compute instance reports."""
    state = gpu(layout=all_of("1g.10gb", 1))
    gi = state.gpu_instances[0]
    ci = attrs.evolve(gi.compute_instances[0], memory_mib=9999, multiprocessors=15, jpegs=0)
    state = attrs.evolve(state, gpu_instances=(attrs.evolve(gi, compute_instances=(ci,)),))
    labels = node_labels([state], "mixed")
    assert labels["nvidia.com/mig-1g.10gb.memory"] == "9999"
    assert labels["nvidia.com/mig-1g.10gb.multiprocessors"] == "15"
    assert labels["nvidia.com/mig-1g.10gb.engines.jpeg"] == "0"


def test_product_label_replaces_spaces_and_skips_empty_parts() -> None:
    """Products join non-empty parts with '-' after replacing spaces."""
    assert (
        product_label("NVIDIA A100-SXM4-40GB", "MIG", "1g.5gb")
        == "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"
    )
    assert product_label("NVIDIA H100 NVL", "") == "NVIDIA-H100-NVL"


# ---------------------------------------------------------------- single-strategy edge cases

INVALID = {
    "nvidia.com/gpu.product": f"{H100}-MIG-INVALID",
    "nvidia.com/gpu.count": "0",
    "nvidia.com/gpu.replicas": "0",
    "nvidia.com/gpu.memory": "0",
}


def test_single_strategy_with_two_profiles_is_labelled_invalid() -> None:
    """More than one profile node-wide gives GFD's MIG-INVALID labels and a reason."""
    node = [gpu(layout=BALANCED)]
    labels = node_labels(node, "single")
    assert_contains(labels, INVALID)
    assert not any(".slices." in key or ".engines." in key for key in labels)
    reason = single_strategy_problem(node)
    assert reason is not None and "more than one MIG profile" in reason and "2g.20gb" in reason


def test_single_strategy_with_an_empty_mig_gpu_is_labelled_invalid() -> None:
    """A MIG-enabled GPU without MIG devices makes the single strategy invalid."""
    node = [gpu(layout=all_of("1g.10gb", 7), index=0), gpu(enabled=True, index=1)]
    assert_contains(node_labels(node, "single"), INVALID)
    assert "no MIG devices exist on GPU 1" in (single_strategy_problem(node) or "")


def test_single_strategy_with_mig_on_some_gpus_only_is_labelled_invalid() -> None:
    """MIG enabled on one GPU and disabled on another is invalid under single."""
    node = [gpu(layout=all_of("1g.10gb", 7), index=0), gpu(index=1)]
    assert_contains(node_labels(node, "single"), INVALID)
    assert "disabled on GPU 1" in (single_strategy_problem(node) or "")


def test_single_strategy_problem_is_none_for_describable_nodes() -> None:
    """One profile everywhere, or MIG off everywhere, is fine for single."""
    assert single_strategy_problem([gpu(layout=all_of("2g.20gb", 3))] * 2) is None
    assert single_strategy_problem([gpu(), gpu()]) is None


def test_mixed_strategy_ignores_empty_mig_gpus_and_counts_whole_gpus() -> None:
    """Under mixed an empty MIG GPU adds nothing; a GPU used whole sets replicas 1."""
    node = [gpu(layout=all_of("1g.10gb", 7), index=0), gpu(enabled=True, index=1)]
    labels = node_labels(node, "mixed")
    assert labels["nvidia.com/mig-1g.10gb.count"] == "7"
    assert labels["nvidia.com/gpu.replicas"] == "0"
    whole = node_labels([gpu(layout=all_of("1g.10gb", 7), index=0), gpu(index=1)], "mixed")
    assert whole["nvidia.com/gpu.replicas"] == "1"
    assert whole["nvidia.com/gpu.count"] == "2"


# --------------------------------------------------------------------------- node-level labels


def test_node_without_mig_capable_gpus_says_so() -> None:
    """An L40S-only node is labelled mig.capable=false with only whole-GPU labels."""
    labels = node_labels([gpu("l40s")], "mixed")
    assert labels["nvidia.com/mig.capable"] == "false"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-L40S"
    assert not any(key.startswith("nvidia.com/mig-") for key in labels)


def test_config_labels_appear_only_when_given() -> None:
    """mig.config and mig.config.state are written only when the caller supplies them."""
    labels = node_labels([gpu()], "mixed")
    assert "nvidia.com/mig.config" not in labels
    assert "nvidia.com/mig.config.state" not in labels


def test_labels_are_sorted_by_key() -> None:
    """The mapping iterates in key order, for stable output."""
    labels = node_labels([gpu(layout=BALANCED)], "mixed", "all-balanced")
    assert list(labels) == sorted(labels)


def test_unknown_strategy_is_rejected() -> None:
    """Only none, single and mixed are strategies migkit labels for."""
    with pytest.raises(LabelError, match="bogus"):
        node_labels([gpu()], "bogus")


def test_gpu_present_is_the_operators_label_and_only_added_on_request() -> None:
    """GFD does not publish gpu.present; migkit adds it only with present=True."""
    for strategy in ("none", "single", "mixed"):
        assert "nvidia.com/gpu.present" not in node_labels([gpu()], strategy)
        assert node_labels([gpu()], strategy, present=True)["nvidia.com/gpu.present"] == "true"


def test_strategy_none_labels_every_gpu_whole_like_gfds_default() -> None:
    """Under none (GFD's default) MIG devices are not resources: whole-GPU labels only."""
    node = [gpu(layout=all_of("1g.10gb", 7), index=0), gpu(index=1)]
    labels = node_labels(node, "none")
    assert labels == {
        "nvidia.com/gpu.count": "2",
        "nvidia.com/gpu.memory": str(gpu_model("h100-80gb").memory_mib),
        "nvidia.com/gpu.product": H100,
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/gpu.sharing-strategy": "none",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "none",
        "nvidia.com/mps.capable": "false",
    }


def test_single_strategy_invalid_node_has_an_empty_sharing_strategy_like_gfd() -> None:
    """GFD leaves gpu.sharing-strategy empty when single cannot describe the node."""
    assert node_labels([gpu(layout=BALANCED)], "single")["nvidia.com/gpu.sharing-strategy"] == ""
    valid = node_labels([gpu(layout=all_of("1g.10gb", 7))], "single")
    assert valid["nvidia.com/gpu.sharing-strategy"] == "none"
