"""The fast (libyaml) and pure-Python composers give the same configs, warnings and errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings

from migkit.config import MigConfigFile, parse_config, yaml_compose
from migkit.errors import ConfigError
from strategies import near_valid_config_texts, yamlish_texts


def outcome(text: str) -> tuple[str, MigConfigFile | None, tuple[str, ...]]:
    try:
        config = parse_config(text, file="c.yaml")
    except ConfigError as err:
        return str(err), None, ()
    return "", config, tuple(str(w) for w in config.warnings)


@pytest.mark.skipif(yaml_compose._FastLoader is None, reason="PyYAML was built without libyaml")
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], deadline=None)
@given(text=near_valid_config_texts() | yamlish_texts())
@example(text="version: v1\nmig-configs:\n  a:\n    - {devices: [1.0], mig-enabled: y}\n")
@example(text="version: v1\nmig-configs:\n  a: [{devices: all, mig-enabled: false}]\n  a: []\n")
def test_fast_and_pure_python_composers_agree(text: str) -> None:
    """Whatever the text, both paths load the same config with the same warnings, or fail alike."""
    fast = outcome(text)
    saved = yaml_compose._FastLoader
    yaml_compose._FastLoader = None
    try:
        pure = outcome(text)
    finally:
        yaml_compose._FastLoader = saved
    assert fast == pure
