"""The GPU Operator's default MIG config works on every GPU it names (``../shared/reference``).

The file is NVIDIA's own ``default-mig-parted-config``. Its ``device-filter`` values name the
PCI device ids the operator supports; each must have a bundled table, and each named config
must plan, with no error, on every bundled model it targets: through its device filter where
an entry has one (the model :func:`model_for_pci_id` picks for that id), else on every bundled
model of the file's device ids that offers all the profiles the entry names (the way the
file's comments group configs by GPU). The second form also reaches ``gb200-189gb``, the GB200
as an early driver named its profiles, which only the file's ``*.95gb`` and ``7g.189gb``
configs are for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from migkit.cli import main
from migkit.config.parse import load_config
from migkit.hardware import gpu_model, gpu_models, model_for_pci_id, provenance
from migkit.models import GpuModel
from migkit.names import canonical_name
from migkit.planning.plan import plan_offline

DEFAULT_CONFIG = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "gpu-operator-default-mig-parted-config.yaml"
)
pytestmark = pytest.mark.skipif(not DEFAULT_CONFIG.is_file(), reason="../shared/reference is not checked out")


def _document() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    return doc


def _filters(entry: dict[str, Any]) -> list[int]:
    value = entry.get("device-filter", [])
    return [int(v, 16) for v in ([value] if isinstance(value, str) else value)]


def _device_ids() -> list[int]:
    """Every PCI device id the file's device filters name, in first-seen order."""
    seen: dict[int, None] = {}
    for entries in _document()["mig-configs"].values():
        for entry in entries:
            seen.update(dict.fromkeys(_filters(entry)))
    return list(seen)


def _operator_models() -> list[GpuModel]:
    """Every bundled model whose PCI device id the file names (some ids have two tables)."""
    ids = set(_device_ids())
    return [m for m in gpu_models() if m.pci_device_id in ids]


def _offers(model: GpuModel, names: object) -> bool:
    return isinstance(names, dict) and all(model.find_profile(canonical_name(str(n))) is not None for n in names)


def _targets(entry: dict[str, Any], models: list[GpuModel]) -> list[GpuModel]:
    """The operator GPUs an entry applies to: by device filter, else by the profiles it names."""
    filters = _filters(entry)
    if filters:
        return [m for m in (model_for_pci_id(pci) for pci in filters) if m is not None]
    devices = entry.get("mig-devices") or {}
    if not entry.get("mig-enabled") or not devices:
        return models
    return [m for m in models if _offers(m, devices)]


def _cases() -> list[tuple[str, str]]:
    if not DEFAULT_CONFIG.is_file():
        return []
    models = _operator_models()
    cases: dict[tuple[str, str], None] = {}
    for name, entries in _document()["mig-configs"].items():
        for entry in entries:
            cases.update(dict.fromkeys((name, m.name) for m in _targets(entry, models)))
    return sorted(cases)


def test_every_pci_device_id_of_the_default_config_has_a_bundled_model() -> None:
    """27 distinct device ids; each resolves to a bundled model of exactly that id."""
    ids = _device_ids()
    assert len(ids) == len(set(ids)) == 27
    missing = [f"{pci:#010x}" for pci in ids if model_for_pci_id(pci) is None]
    assert not missing, f"no bundled model for {missing}"
    found = [model_for_pci_id(pci) for pci in ids]
    assert all(m is not None and m.pci_device_id == pci for m, pci in zip(found, ids, strict=True))
    assert len({m.name for m in found if m is not None}) == 27  # one model per device id


def test_every_named_config_targets_some_bundled_model() -> None:
    """No config of the file is left without a GPU to plan it on."""
    targeted = {name for name, _ in _cases()}
    assert targeted == set(_document()["mig-configs"])


@pytest.mark.parametrize(("config", "model"), _cases())
def test_default_config_plans_on_every_model_it_targets(config: str, model: str) -> None:
    """``plan_offline`` of the named config on one GPU of the model: feasible, no error."""
    loaded = load_config(str(DEFAULT_CONFIG))
    plan = plan_offline(loaded, config, [gpu_model(model)])
    assert plan.feasible, plan.errors
    assert not plan.errors
    (gpu,) = plan.gpus
    assert gpu.model == model
    if gpu.desired_mig_enabled and gpu.desired_counts:
        assert gpu.layout is not None and gpu.layout.counts == gpu.desired_counts


OPERATOR_MODEL_NAMES = sorted({m.name for m in gpu_models() if m.mig_capable})


@pytest.mark.parametrize("model", OPERATOR_MODEL_NAMES)
def test_generate_config_and_profiles_work_offline_for_every_model(
    model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``generate-config --gpu`` and ``profiles --gpu`` serve every bundled MIG model."""
    table = gpu_model(model)
    assert main(["generate-config", "--gpu", model, "-o", "json"]) == 0
    generated = json.loads(capsys.readouterr().out)
    for profile in table.profiles:
        assert any(
            profile.name in (entry.get("mig-devices") or {})
            for entries in generated["mig-configs"].values()
            for entry in entries
        ), profile.name
    assert main(["profiles", "--gpu", model, "-o", "json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["model"] == model and listed["name"] == table.product_name
    assert [p["id"] for p in listed["profiles"]] == [p.id for p in table.profiles]
    assert provenance(model).identity_mark in ("observed", "derived", "inferred")
