"""The flag spellings nvidia-mig-parted accepts (Go's flag forms) are accepted by migkit too."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import migkit
from migkit import simulator
from migkit.cli import main

CONFIG = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-3g:
    - devices: all
      mig-enabled: true
      mig-devices: {"3g.40gb": 2}
"""


@pytest.fixture
def node(tmp_path: Path) -> str:
    return simulator.write_state(tmp_path / "node.state", "1xh100-80gb")


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG)
    return str(path)


def test_dash_v_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`-v` is the version flag, as in nvidia-mig-parted."""
    with pytest.raises(SystemExit) as exit_info:
        main(["-v"])
    assert exit_info.value.code == 0
    assert migkit.__version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["assert", "--valid-config=true", "-f", "{cfg}", "-c", "all-3g"],
        ["assert", "-a=1", "-f", "{cfg}", "-c", "all-3g"],
        ["assert", "-valid-config", "-config-file", "{cfg}", "-selected-config", "all-3g"],
        ["assert", "-a", "-config-file={cfg}", "-selected-config=all-3g"],
        ["assert", "-a", "-f={cfg}", "-c=all-3g"],
        ["-debug=true", "assert", "-am", "-f", "{cfg}", "-c", "all-3g"],
    ],
)
def test_go_flag_forms_are_accepted(args: list[str], cfg: str) -> None:
    """Boolean flags with =value, single-dash long flags and -f=X all parse (no node needed)."""
    assert main([a.replace("{cfg}", cfg) for a in args]) == 0


def test_a_boolean_flag_set_false_is_false_even_against_the_environment(
    node: str, cfg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--valid-config=false runs the real assert, which fails on a fresh node (exit 1)."""
    monkeypatch.setenv("MIG_PARTED_VALID_CONFIG", "true")
    assert main(["--sim-state", node, "assert", "-f", cfg, "-c", "all-3g"]) == 0
    assert main(["--sim-state", node, "assert", "--valid-config=false", "-f", cfg, "-c", "all-3g"]) == 1


def test_skip_reset_false_and_mode_only_false_apply_everything(node: str, cfg: str) -> None:
    """apply --mode-only=false --skip-reset=false makes the whole config true."""
    args = ["--sim-state", node, "apply", "--mode-only=false", "--skip-reset=False"]
    assert main([*args, "-f", cfg, "-c", "all-3g"]) == 0
    assert main(["--sim-state", node, "assert", "-f", cfg, "-c", "all-3g"]) == 0


def test_a_bad_boolean_value_is_a_usage_error(cfg: str, capsys: pytest.CaptureFixture[str]) -> None:
    """-a=yes is refused (Go's ParseBool does not know it), exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(["assert", "-a=yes", "-f", cfg, "-c", "all-3g"])
    assert exit_info.value.code == 2
    assert "invalid boolean value 'yes'" in capsys.readouterr().err


def test_valid_config_answers_alike_with_the_flag_and_the_variable(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """assert -a checks profiles against the simulated node both with --sim-state and the env."""
    bad = tmp_path / "bad.yaml"
    # 1g.5gb is an A100-40GB profile: a valid file, but not for this H100 node.
    bad.write_text(CONFIG.replace('"3g.40gb": 2', '"1g.5gb": 1'))
    with_flag = main(["--sim-state", node, "assert", "-a", "-f", str(bad), "-c", "all-3g"])
    monkeypatch.setenv("MIGKIT_SIM_STATE", node)
    with_env = main(["assert", "-a", "-f", str(bad), "-c", "all-3g"])
    assert with_flag == with_env == 2


def test_labels_strategy_none_and_gpu_present_on_request(node: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`labels --strategy none` (GFD's default) works; gpu.present only with --gpu-present."""
    assert main(["--sim-state", node, "labels", "--strategy", "none"]) == 0
    out = capsys.readouterr().out
    assert "nvidia.com/mig.strategy=none" in out and "gpu.present" not in out
    assert main(["--sim-state", node, "labels", "--gpu-present"]) == 0
    assert "nvidia.com/gpu.present=true" in capsys.readouterr().out


TOKENS = [
    "assert",
    "apply",
    "labels",
    "-a",
    "-a=1",
    "-a=",
    "-a=maybe",
    "--valid-config=false",
    "-valid-config",
    "-config-file",
    "-f",
    "-f=",
    "-c",
    "-c=x",
    "--",
    "-",
    "=",
    "-=",
    "--=",
    "-d=true",
    "-debug",
    "-v",
    "-version",
    "-am",
    "-m=0",
    "--mode-only=T",
    "-s=F",
    "-strategy",
    "none",
    "-x",
    "--bogus=1",
    "x=1",
]


@settings(deadline=None, max_examples=200)
@given(words=st.lists(st.sampled_from(TOKENS), max_size=8))
def test_any_mix_of_go_and_gnu_forms_parses_or_is_a_usage_error(words: list[str]) -> None:
    """Rewriting Go's forms never crashes: a result code, or argparse's exit 0 (help) / 2."""
    try:
        code = main(["--simulate", "1xh100-80gb", *words])
    except SystemExit as exit_info:
        assert exit_info.code in (0, 2)
    else:
        assert code in (0, 1, 2)
