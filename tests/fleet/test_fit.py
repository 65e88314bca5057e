"""The offline fit check of ``migkit rollout`` and ``cluster status`` (pure, no cluster)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migkit.config import load_config
from migkit.export import render
from migkit.fleet.fit import (
    COUNT_LABEL,
    MEMORY_LABEL,
    PRODUCT_LABEL,
    UnknownGpus,
    fit_problem,
    fitting_configs,
    inventory_from_labels,
    inventory_from_published,
    product_value,
)
from migkit.generate import generate_config
from migkit.hardware import gpu_model, gpu_models
from migkit.models import GpuModel
from strategies import gi_requests, mig_models, oracle_gi_feasible

MIG_MODELS = [m for m in gpu_models() if m.mig_capable]


def labels_of(model: GpuModel, count: int = 8, suffix: str = "") -> dict[str, str]:
    return {PRODUCT_LABEL: product_value(model.product_name) + suffix, COUNT_LABEL: str(count),
            MEMORY_LABEL: str(model.memory_mib)}


def config_with(counts: dict[str, int], devices: str = "all") -> str:
    devices_yaml = devices if devices == "all" else f"[{devices}]"
    body = "".join(f"\n        {name}: {n}" for name, n in counts.items()) or " {}"
    return f"version: v1\nmig-configs:\n  wanted:\n    - devices: {devices_yaml}\n      mig-enabled: true\n" \
           f"      mig-devices:{body}\n"


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_every_mig_model_is_known_by_its_gfd_product_label(model: GpuModel) -> None:
    """GFD's product value (spaces as dashes) and memory name the bundled model's MIG geometry,
    with or without the single strategy's -MIG-<profile> suffix (then the GPU count is unknown;
    a product name shared by models of different geometry is then refused)."""
    inv = inventory_from_labels(labels_of(model, 4))
    assert inv.model.profiles == model.profiles and inv.count == 4
    twins = [m for m in MIG_MODELS if m.product_name == model.product_name and m.profiles != model.profiles]
    if twins:
        with pytest.raises(UnknownGpus, match="does not say which"):
            inventory_from_labels(labels_of(model, 28, "-MIG-1g.10gb"))
    else:
        single = inventory_from_labels(labels_of(model, 28, "-MIG-1g.10gb"))
        assert single.model.profiles == model.profiles and single.count is None


@pytest.mark.parametrize("labels, why", [
    ({}, "no nvidia.com/gpu.product"),
    ({PRODUCT_LABEL: "NVIDIA-Tesla-T4", COUNT_LABEL: "1"}, "not in migkit's hardware tables"),
    ({PRODUCT_LABEL: "NVIDIA-L40S", COUNT_LABEL: "1"}, "does not support MIG"),
    ({PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}, "is not a number"),
    ({PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3", COUNT_LABEL: "eight"}, "is not a number"),
    ({PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3", COUNT_LABEL: "0"}, "no GPUs"),
])
def test_labels_that_do_not_say_which_gpus_are_refused(labels: dict[str, str], why: str) -> None:
    """Fail closed: missing, unknown or unreadable labels are a reason, never a fit."""
    with pytest.raises(UnknownGpus, match=why):
        inventory_from_labels(labels)


@given(st.data())
def test_a_config_fits_exactly_when_the_oracle_can_place_it(data: st.DataObject) -> None:
    """For any GI-level request on any MIG model, the fit check agrees with the brute-force
    enumeration of legal layouts."""
    model = data.draw(mig_models())
    counts = data.draw(gi_requests(model))
    config = load_config(config_with(counts), name="test")
    problem = fit_problem(config, "wanted", inventory_from_labels(labels_of(model, 2)))
    assert (problem is None) == oracle_gi_feasible(model.name, counts), problem


@pytest.mark.parametrize("model", MIG_MODELS, ids=lambda m: m.name)
def test_a_nodes_generated_config_fits_it_entirely(model: GpuModel) -> None:
    """Every config of generate-config for a model fits that model (what the agent publishes)."""
    config = load_config(render(generate_config([model] * 2)), name="generated")
    assert fitting_configs(config, inventory_from_labels(labels_of(model, 2))) == tuple(config.configs)


def test_a_missing_config_and_index_lists_under_single_strategy_are_reasons() -> None:
    """An absent config name is named; GPU indices cannot be checked when the labels count MIG
    devices rather than GPUs."""
    h100 = gpu_model("h100-80gb")
    config = load_config(config_with({"3g.40gb": 2}, devices="0, 1"), name="f")
    assert "no config 'other'" in (fit_problem(config, "other", inventory_from_labels(labels_of(h100))) or "")
    single = inventory_from_labels(labels_of(h100, 14, "-MIG-3g.40gb"))
    assert "names GPU indices" in (fit_problem(config, "wanted", single) or "")
    assert fit_problem(load_config(config_with({"3g.40gb": 2}), name="f"), "wanted", single) is None


def test_one_problem_on_every_gpu_is_said_once() -> None:
    """A profile the GPUs lack is reported once, naming the GPUs, not once per GPU."""
    a100 = gpu_model("a100-40gb")
    problem = fit_problem(load_config(config_with({"3g.40gb": 1}), name="f"), "wanted",
                          inventory_from_labels(labels_of(a100, 8)))
    assert problem is not None and problem.count("is not a MIG profile") == 1
    assert "GPU 0,1,2,3,4,5,6,7 " in problem


def published(*models: str, count: int | None = None) -> dict[str, str]:
    """A ConfigMap's data as the agent writes it for GPUs of these bundled models."""
    return {"gpu-count": str(len(models) if count is None else count), "gpu-models": ",".join(models)}


def test_the_gpus_the_agent_read_win_over_single_strategy_labels() -> None:
    """Under the single strategy gpu.count counts MIG devices; the agent's gpu-count and
    gpu-models give the real GPUs, so a config naming GPU indices is checked on them."""
    single = labels_of(gpu_model("h100-80gb"), 56, "-MIG-1g.10gb")
    inv = inventory_from_published(published(*["h100-80gb"] * 8), single)
    assert inv.count == 8 and inv.describe() == "8x h100-80gb"
    split = load_config(config_with({"3g.40gb": 2}, devices="0, 1, 2, 3"), name="f")
    assert fit_problem(split, "wanted", inv) is None
    assert "names GPU indices" in (fit_problem(split, "wanted", inventory_from_labels(single)) or "")
    # Without the agent's keys (an older agent) the labels still decide.
    assert inventory_from_published({"config.yaml": "x"}, single).count is None


def test_a_mixed_node_is_planned_gpu_by_gpu() -> None:
    """Each GPU is planned as its own model, in index order: an index naming the L40S with
    MIG enabled is a reason; the A100 alone fits."""
    inv = inventory_from_published(published("a100-40gb", "l40s"), {})
    assert inv.describe() == "1x a100-40gb + 1x l40s" and inv.model.name == "a100-40gb"
    assert fit_problem(load_config(config_with({"3g.20gb": 2}, devices="0"), name="f"), "wanted", inv) is None
    problem = fit_problem(load_config(config_with({"3g.20gb": 2}, devices="1"), name="f"), "wanted", inv)
    assert problem is not None and "GPU 1 does not support MIG" in problem


@pytest.mark.parametrize("data, why", [
    (published("h100-80gb", "unknown"), "GPU 1 matches none of migkit's hardware tables"),
    (published("h100-80gb", "h999-1tb"), "GPU 1 is a 'h999-1tb'"),
    (published("h100-80gb", count=2), "does not match"),
    ({"gpu-count": "eight", "gpu-models": "h100-80gb"}, "is not a number"),
    (published(), "found no GPUs"),
    (published("l40s", "l40s"), "no GPU of the node supports MIG"),
])
def test_what_the_agent_could_not_name_is_a_reason(data: dict[str, str], why: str) -> None:
    """Fail closed: an unknown model, a count that disagrees with the list, no MIG GPU."""
    with pytest.raises(UnknownGpus, match=why):
        inventory_from_published(data, labels_of(gpu_model("h100-80gb")))
