"""The fleet commands' command line, without a cluster: the missing extra, usage errors."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from migkit import cli
from migkit.fleet import EXTRA_HINT


@pytest.mark.parametrize("argv", [["rollout", "--selector", "a=b", "--config", "all-balanced"],
                                  ["cluster", "status"]])
def test_without_the_k8s_extra_a_fleet_command_says_what_to_install(
        argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 2 with one line naming `pip install 'migkit[k8s]'`, as `migkit agent` does."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "kubernetes" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and EXTRA_HINT in err and argv[0] in err


@pytest.mark.parametrize("argv", [
    ["rollout", "--config", "all-balanced"],  # no selector
    ["rollout", "--selector", "a=b"],  # no config
    ["rollout", "--selector", "a=b", "--config", "x", "-o", "yaml"],
    ["cluster"],
    ["cluster", "nodes"],
])
def test_usage_errors_exit_2_before_any_cluster_access(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_an_unreadable_kubeconfig_exits_2(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """No cluster configuration: exit 2, nothing attempted."""
    missing = tmp_path / "nope.kubeconfig"
    assert cli.main(["rollout", "--selector", "a=b", "--config", "c", "--kubeconfig", str(missing)]) == 2
    assert "cannot load the cluster configuration" in capsys.readouterr().err


def test_a_live_line_is_rewritten_in_place_on_a_terminal_and_plain_lines_otherwise() -> None:
    """On a terminal each wave has one line, rewritten; elsewhere every event is its own line."""
    import io

    from migkit.fleet.rollout import Progressor

    tty = io.StringIO()
    live = Progressor(tty, live=True, quiet=False)
    live.event("labelled a")
    live.status("wave 1/1: 0 success, 0 failed, 1 waiting [0s]")
    live.status("wave 1/1: 0 success, 0 failed, 1 waiting [1s]")
    live.end_wave("wave 1/1: 1 success, 0 failed, 0 waiting [2s]")
    assert tty.getvalue().count("\n") == 1 and tty.getvalue().count("\r\033[K") == 3
    assert "labelled a" not in tty.getvalue()

    pipe = io.StringIO()
    plain = Progressor(pipe, live=False, quiet=False)
    plain.event("labelled a")
    plain.status("wave 1/1: 0 success, 0 failed, 1 waiting [0s]")
    plain.end_wave("wave 1/1: 1 success, 0 failed, 0 waiting [2s]")
    assert pipe.getvalue() == "labelled a\nwave 1/1: 1 success, 0 failed, 0 waiting [2s]\n"
