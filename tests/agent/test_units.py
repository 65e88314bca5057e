"""The agent's pure parts: the pausing table, the trigger rules, the reboot guard, settings."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migkit.agent import labels as L
from migkit.agent.reconcile import Handled, Trigger, decide_trigger, paused_labels, reboot_guard
from migkit.agent.settings import SettingsError, parse_settings

DEPLOY_VALUES = st.sampled_from(["true", "false", "", L.PAUSED])
NODE_LABELS = st.dictionaries(
    st.sampled_from([*L.OPERAND_DEPLOY_LABELS, L.CLIENT_DEPLOY_LABEL, "nvidia.com/gpu.present"]), DEPLOY_VALUES)


@pytest.mark.parametrize(("current", "paused", "restored"), [
    ("false", "false", "false"),
    ("true", L.PAUSED, "true"),
    (L.PAUSED, L.PAUSED, "true"),
    ("", L.PAUSED, "true"),
    (None, L.PAUSED, "true"),
])
def test_pausing_table(current: str | None, paused: str, restored: str) -> None:
    """Upstream's pausing and restoring table, row by row."""
    assert L.paused_value(current) == paused
    assert L.restored_value(current) == restored


@given(NODE_LABELS)
def test_pause_then_restore_gives_back_true_or_false(labels: dict[str, str]) -> None:
    """Pausing then restoring leaves every operand `true` unless it was `false`; the client
    label is touched only when present; nothing else is ever written."""
    paused = {**labels, **L.pause_patch(labels)}
    restored = {**paused, **L.restore_patch(paused)}
    assert set(L.pause_patch(labels)) == set(L.OPERAND_DEPLOY_LABELS) | (
        {L.CLIENT_DEPLOY_LABEL} & set(labels))
    for name in L.deploy_labels_to_touch(labels):
        assert restored[name] == ("false" if labels.get(name) == "false" else "true")
        assert paused[name] in ("false", L.PAUSED)
    assert restored.get("nvidia.com/gpu.present") == labels.get("nvidia.com/gpu.present")
    assert not paused_labels(restored)


def test_trigger_rules() -> None:
    """Start runs the label; a new value runs; the same value does not; a new retry value runs
    once; a changed config digest runs only when watched; no label never runs."""
    cfg = {L.CONFIG_LABEL: "all-balanced"}
    assert decide_trigger({}, {}, Handled(), None) is Trigger.NONE
    assert decide_trigger(cfg, {}, Handled(), None) is Trigger.START
    done = Handled("all-balanced", None, None, True)
    assert decide_trigger(cfg, {}, done, None) is Trigger.NONE
    assert decide_trigger({L.CONFIG_LABEL: "all-1g.10gb"}, {}, done, None) is Trigger.LABEL
    assert decide_trigger(cfg, {L.RETRY_ANNOTATION: "1"}, done, None) is Trigger.RETRY
    assert decide_trigger(cfg, {L.RETRY_ANNOTATION: "1", L.HANDLED_RETRY_ANNOTATION: "1"}, done, None) \
        is Trigger.NONE
    watched = Handled("all-balanced", None, "abc", True)
    assert decide_trigger(cfg, {}, watched, "abc") is Trigger.NONE
    assert decide_trigger(cfg, {}, watched, "def") is Trigger.CONFIG_FILE


def test_reboot_guard() -> None:
    """A mode still wrong while `rebooting` is a failure; in any other state it is a mode change."""
    assert reboot_guard(L.STATE_REBOOTING, (0, 3)) is not None
    assert "GPU 0, 3" in (reboot_guard(L.STATE_REBOOTING, (0, 3)) or "")
    assert reboot_guard(L.STATE_REBOOTING, ()) is None
    assert reboot_guard(L.STATE_PENDING, (0,)) is None
    assert reboot_guard(None, (0,)) is None


def test_settings_from_upstream_env_and_flags() -> None:
    """Upstream's variables configure the agent; flags win; bad values are refused."""
    env = {"NODE_NAME": "n1", "WITH_REBOOT": "true", "CONFIG_FILE": "/c.yaml", "HOST_ROOT_MOUNT": "/hostfs",
           "DEFAULT_GPU_CLIENTS_NAMESPACE": "gpu-operator"}
    s = parse_settings([], env)
    assert (s.node_name, s.with_reboot, s.config_file, s.host_prefix) == ("n1", True, "/c.yaml", ("chroot", "/hostfs"))
    assert s.pod_namespace == "gpu-operator"
    assert parse_settings(["--with-reboot=false", "-n", "n2"], env).with_reboot is False
    assert parse_settings(["-n", "n2"], env).node_name == "n2"
    with pytest.raises(SettingsError, match="node name"):
        parse_settings([], {})
    with pytest.raises(SettingsError, match="WITH_REBOOT"):
        parse_settings([], {**env, "WITH_REBOOT": "maybe"})
    with pytest.raises(SettingsError, match="seconds"):
        parse_settings(["--operand-wait-timeout", "-1"], env)


def test_cli_commands_do_not_import_the_agent_extra(tmp_path: object) -> None:
    """`import migkit` and the other commands never load kubernetes or prometheus_client."""
    code = (
        "import sys, io, contextlib\n"
        "import migkit\n"
        "from migkit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--simulate', '2xh100-80gb', 'generate-config'])\n"
        "    main(['--simulate', '2xh100-80gb', 'export'])\n"
        "    main(['profiles', '--gpu', 'h100-80gb'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'prometheus_client', 'urllib3')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_agent_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Without kubernetes installed, `migkit agent` exits 2 with the pip command in one line."""
    import importlib.util

    import migkit.agent

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "kubernetes" else real(name, *a))
    from migkit.cli import main

    assert main(["agent", "--node-name", "n1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and migkit.agent.EXTRA_HINT in err


def test_host_state_file_is_written_as_upstream_writes_it(tmp_path: pathlib.Path) -> None:
    """The host drop-in gets upstream's exact text and a daemon-reload; a failed reload puts the
    old content back; a host without the file is left alone."""
    from migkit.agent.host import Host, HostError

    calls: list[list[str]] = []
    codes = {"daemon-reload": 0}

    def runner(argv: Sequence[str], *, timeout: float = 0) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(list(argv), codes.get(argv[-1], 0), "", "reload failed")

    drop_in = "/etc/systemd/system/nvidia-mig-manager.service.d/override.conf"
    host = Host(runner, str(tmp_path))
    assert host.write_selected_config(drop_in, "all-balanced") is False and calls == []
    path = tmp_path / drop_in.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text("old\n")
    assert host.write_selected_config(drop_in, "all-balanced") is True
    assert path.read_text() == '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-balanced"\n'
    assert calls == [["systemctl", "daemon-reload"]]
    codes["daemon-reload"] = 1
    with pytest.raises(HostError, match="daemon-reload"):
        host.write_selected_config(drop_in, "all-1g.10gb")
    assert "all-balanced" in path.read_text()


def test_health_is_not_stale_while_reconfiguring() -> None:
    """A worker busy in a long reconfiguration stays healthy; an idle one that stopped beating does not."""
    from migkit.agent.observe import Health

    health = Health(stale_after=0.0)
    health.beat("worker")
    assert health.healthy()[0] is False
    health.busy.add("worker")
    assert health.healthy() == (True, "ok")
