"""Hooks files and HookRunner: upstream's hook semantics with real (tiny) programs as hooks."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from migkit.errors import ConfigError, MigkitError
from migkit.hooks import (
    HOOK_ORDER,
    HookError,
    HookRunner,
    Hooks,
    HookSpec,
    apply_flag_env,
    load_hooks,
    parse_hooks,
    restore_flag_env,
)

FLAGS = apply_flag_env("/etc/mig/config.yaml", "all-balanced", "/etc/mig/hooks.yaml", False, True)

# Reads the environment the program was started with (/proc, so that nothing the interpreter
# adds at startup shows up) and its argv and working directory, into the JSON file argv[1].
PROBE = """\
import json, os, sys
raw = open("/proc/self/environ", "rb").read().decode()
env = dict(item.split("=", 1) for item in raw.split("\\0") if item)
with open(sys.argv[1], "w") as out:
    json.dump({"env": env, "argv": sys.argv[1:], "cwd": os.getcwd()}, out)
"""


def script(directory: Path, name: str, body: str, interpreter: str = "/bin/sh") -> Path:
    """An executable file ``name`` in ``directory`` run by ``interpreter``."""
    path = directory / name
    path.write_text(f"#!{interpreter}\n{body}", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def probe(tmp_path: Path) -> Path:
    return script(tmp_path, "probe", PROBE, interpreter=sys.executable)


def hooks_of(name: str, *specs: HookSpec) -> Hooks:
    return Hooks(hooks=((name, specs),))


def read(path: Path) -> dict[str, object]:
    result: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return result


# --------------------------------------------------------------------------- environment


def test_hooks_see_only_their_envs_and_the_flag_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent environment (PATH, HOME, anything else) is not passed to hooks."""
    monkeypatch.setenv("MIGKIT_TEST_PARENT_ONLY", "leak")
    out = tmp_path / "seen.json"
    spec = HookSpec(str(probe(tmp_path)), (str(out),), envs=(("REASON", "mig-change"),))
    HookRunner(hooks_of("apply-start", spec), FLAGS).run("apply-start")
    assert read(out)["env"] == {"REASON": "mig-change", **FLAGS}


def test_flag_variables_win_over_the_hooks_own_envs(tmp_path: Path) -> None:
    """On a name clash the flag-derived value replaces the value from `envs`."""
    out = tmp_path / "seen.json"
    spec = HookSpec(
        str(probe(tmp_path)),
        (str(out),),
        envs=(("MIG_PARTED_SELECTED_CONFIG", "from-hook"), ("OTHER", "kept")),
    )
    HookRunner(hooks_of("apply-exit", spec), FLAGS).run("apply-exit")
    env = read(out)["env"]
    assert isinstance(env, dict)
    assert env["MIG_PARTED_SELECTED_CONFIG"] == "all-balanced"
    assert env["OTHER"] == "kept"


def test_inherit_env_adds_the_parent_environment_under_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With inherit_env the parent's variables are the base; envs and flags still win."""
    monkeypatch.setenv("MIGKIT_TEST_PARENT_ONLY", "inherited")
    monkeypatch.setenv("MIG_PARTED_HOOKS_FILE", "parent-value")
    out = tmp_path / "seen.json"
    spec = HookSpec(str(probe(tmp_path)), (str(out),))
    HookRunner(hooks_of("apply-start", spec), FLAGS, inherit_env=True).run("apply-start")
    env = read(out)["env"]
    assert isinstance(env, dict)
    assert env["MIGKIT_TEST_PARENT_ONLY"] == "inherited"
    assert env["MIG_PARTED_HOOKS_FILE"] == "/etc/mig/hooks.yaml"
    assert env["PATH"] == os.environ["PATH"]


def test_apply_flag_env_spells_booleans_and_blanks_unset_strings() -> None:
    """Booleans are "true"/"false"; an unset string flag is an empty value, as mig-parted sets them."""
    assert apply_flag_env(None, None, "h.yaml", True, False) == {
        "MIG_PARTED_CONFIG_FILE": "",
        "MIG_PARTED_SELECTED_CONFIG": "",
        "MIG_PARTED_HOOKS_FILE": "h.yaml",
        "MIG_PARTED_SKIP_RESET": "true",
        "MIG_PARTED_MODE_CHANGE_ONLY": "false",
    }
    assert restore_flag_env("cp.json", None, True) == {
        "MIG_PARTED_CHECKPOINT_FILE": "cp.json",
        "MIG_PARTED_HOOKS_FILE": "",
        "MIG_PARTED_MODE_CHANGE_ONLY": "true",
    }


# --------------------------------------------------------------------------- running


def test_arguments_reach_the_program_verbatim_without_a_shell(tmp_path: Path) -> None:
    """Shell syntax in args is passed literally: hooks run as argument vectors."""
    out = tmp_path / "seen.json"
    args = (str(out), "$HOME; echo hi", "*", "a b")
    HookRunner(hooks_of("apply-start", HookSpec(str(probe(tmp_path)), args)), FLAGS).run(
        "apply-start"
    )
    assert read(out)["argv"] == list(args)


def test_workdir_is_the_hooks_working_directory(tmp_path: Path) -> None:
    """`workdir` sets the directory the command runs in."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    out = tmp_path / "seen.json"
    spec = HookSpec(str(probe(tmp_path)), (str(out),), workdir=str(workdir))
    HookRunner(hooks_of("pre-apply-config", spec), FLAGS).run("pre-apply-config")
    assert read(out)["cwd"] == str(workdir)


def test_bare_command_names_are_found_on_the_invoking_processs_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name without '/' is looked up on migkit's PATH even though the hook gets no PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir, "migkit-test-probe", PROBE, interpreter=sys.executable)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "seen.json"
    HookRunner(hooks_of("apply-start", HookSpec("migkit-test-probe", (str(out),))), FLAGS).run(
        "apply-start"
    )
    assert "PATH" not in read(out)["env"]  # type: ignore[operator]


def test_command_missing_from_path_is_a_hook_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown bare command fails with the hook name and the PATH searched."""
    monkeypatch.setenv("PATH", str(tmp_path))
    runner = HookRunner(hooks_of("apply-start", HookSpec("no-such-hook-program")), FLAGS)
    with pytest.raises(HookError, match=r"'apply-start'.*no-such-hook-program.*not found on PATH"):
        runner.run("apply-start")


def test_failure_reports_hook_command_status_and_stderr_tail(tmp_path: Path) -> None:
    """A non-zero exit raises HookError naming the hook, command, status and stderr tail."""
    body = 'i=0\nwhile [ $i -lt 40 ]; do echo "noise $i" >&2; i=$((i+1)); done\n'
    body += 'echo "kubelet did not stop" >&2\nexit 3\n'
    failing = script(tmp_path, "stop-clients", body)
    runner = HookRunner(hooks_of("pre-apply-mode", HookSpec(str(failing), ("--fast",))), FLAGS)
    with pytest.raises(HookError) as caught:
        runner.run("pre-apply-mode")
    err = caught.value
    message = str(err)
    assert "'pre-apply-mode'" in message
    assert f"{failing} --fast" in message
    assert "exited with status 3" in message
    assert "kubelet did not stop" in message
    assert "noise 39" in message and "noise 0\n" not in message  # only the tail
    assert err.hook == "pre-apply-mode"
    assert err.returncode == 3
    assert err.argv == (str(failing), "--fast")
    assert err.stderr_tail.endswith("kubelet did not stop")
    assert isinstance(err, MigkitError)


def test_stdout_is_reported_when_a_failing_hook_wrote_no_stderr(tmp_path: Path) -> None:
    """With an empty stderr the error shows the tail of stdout instead."""
    failing = script(tmp_path, "quiet", "echo only-on-stdout\nexit 1\n")
    runner = HookRunner(hooks_of("apply-exit", HookSpec(str(failing))), FLAGS)
    with pytest.raises(HookError, match=r"(?s)status 1.*stdout ended with.*only-on-stdout"):
        runner.run("apply-exit")


def test_a_hook_killed_by_a_signal_says_so(tmp_path: Path) -> None:
    """A negative return code is reported as the signal that killed the hook."""
    killed = script(tmp_path, "suicide", "kill -9 $$\n")
    runner = HookRunner(hooks_of("apply-start", HookSpec(str(killed))), FLAGS)
    with pytest.raises(HookError, match="killed by signal 9") as caught:
        runner.run("apply-start")
    assert caught.value.returncode == -9


def test_commands_run_in_order_and_the_first_failure_stops_the_list(tmp_path: Path) -> None:
    """Specs under one name run in file order; a failing one stops those after it."""
    log = tmp_path / "log"
    first = script(tmp_path, "first", f'echo first >> "{log}"\n')
    failing = script(tmp_path, "fails", f'echo second >> "{log}"\nexit 1\n')
    third = script(tmp_path, "third", f'echo third >> "{log}"\n')
    hooks = hooks_of(
        "apply-exit", HookSpec(str(first)), HookSpec(str(failing)), HookSpec(str(third))
    )
    with pytest.raises(HookError):
        HookRunner(hooks, FLAGS).run("apply-exit")
    assert log.read_text(encoding="utf-8") == "first\nsecond\n"


def test_missing_hook_names_are_skipped_silently(tmp_path: Path) -> None:
    """Running a hook name the file does not define does nothing and raises nothing."""
    failing = script(tmp_path, "fails", "exit 1\n")
    runner = HookRunner(hooks_of("apply-exit", HookSpec(str(failing))), FLAGS)
    for name in ("apply-start", "pre-apply-mode", "pre-apply-config"):
        runner.run(name)


def test_unknown_hook_name_is_a_load_error_with_position_and_suggestion(tmp_path: Path) -> None:
    """A misspelled hook name fails the load naming the file, the line and the likely name."""
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "version: v1\nhooks:\n  apply-start:\n    - command: /bin/true\n"
        "  pre-apply-confg:\n    - command: /bin/true\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_hooks(path)
    err = caught.value
    assert err.file == str(path) and err.line == 5
    assert "pre-apply-confg" in str(err) and "did you mean 'pre-apply-config'" in str(err)


def test_unknown_hook_name_without_a_close_match_lists_the_known_ones() -> None:
    """A name far from every hook name is still an error, listing the names that exist."""
    with pytest.raises(ConfigError) as caught:
        parse_hooks("hooks:\n  post-apply:\n    - command: /bin/true\n")
    assert "post-apply" in str(caught.value)
    assert all(name in str(caught.value) for name in HOOK_ORDER)


def test_apply_with_a_misspelled_hook_exits_2_before_any_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply -k with an unknown hook name exits 2 and issues no mutating NVML call."""
    from migkit import simulator
    from migkit.cli import main

    state = simulator.write_state(tmp_path / "n.state", "1xh100-80gb")
    config = tmp_path / "c.yaml"
    config.write_text(
        "version: v1\nmig-configs:\n  mig:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\n"
    )
    hooks = tmp_path / "hooks.yaml"
    hooks.write_text("hooks:\n  pre-apply-mdoe:\n    - command: /bin/true\n")
    code = main(["--sim-state", state, "apply", "-f", str(config), "-c", "mig", "-k", str(hooks)])
    assert code == 2
    assert f"{hooks}:2" in capsys.readouterr().err
    assert not simulator.stats(state).get("nvmlDeviceSetMigMode")


def test_debug_echoes_hook_output(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Under debug the hook's stdout and stderr appear on migkit's own streams."""
    chatty = script(tmp_path, "chatty", "echo to-out\necho to-err >&2\n")
    HookRunner(hooks_of("apply-start", HookSpec(str(chatty))), FLAGS, debug=True).run("apply-start")
    captured = capfd.readouterr()
    assert "to-out" in captured.out
    assert "to-err" in captured.err


def test_output_is_not_echoed_without_debug(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Without debug hook output is captured, not shown."""
    chatty = script(tmp_path, "chatty", "echo to-out\necho to-err >&2\n")
    HookRunner(hooks_of("apply-start", HookSpec(str(chatty))), FLAGS).run("apply-start")
    captured = capfd.readouterr()
    assert "to-out" not in captured.out and "to-err" not in captured.err


def test_a_hook_over_its_timeout_is_killed(tmp_path: Path) -> None:
    """With a timeout a hanging hook is killed and reported."""
    slow = script(tmp_path, "slow", "echo started >&2\nexec sleep 30\n")
    runner = HookRunner(hooks_of("apply-start", HookSpec(str(slow))), FLAGS, timeout=0.5)
    with pytest.raises(HookError, match=r"(?s)did not finish within 0.5 s.*started"):
        runner.run("apply-start")


def test_background_processes_holding_hook_output_do_not_block(tmp_path: Path) -> None:
    """A hook that leaves a child writing to its output returns when the hook itself exits."""
    starter = script(tmp_path, "starter", "sleep 3 &\necho started\n")
    began = time.monotonic()
    HookRunner(hooks_of("apply-exit", HookSpec(str(starter))), FLAGS).run("apply-exit")
    assert time.monotonic() - began < 2


def test_missing_workdir_is_a_hook_error(tmp_path: Path) -> None:
    """A workdir that does not exist fails the hook with a clear message."""
    spec = HookSpec("/bin/true", workdir=str(tmp_path / "absent"))
    with pytest.raises(HookError, match="cannot run /bin/true in"):
        HookRunner(hooks_of("apply-start", spec), FLAGS).run("apply-start")


# --------------------------------------------------------------------------- loading


def test_hooks_file_loads_specs_in_order_and_ignores_unknown_keys(tmp_path: Path) -> None:
    """`version` is informational, unknown top-level and spec keys are ignored."""
    path = tmp_path / "hooks.yaml"
    path.write_text(
        "version: v9\n"
        "comment: anything\n"
        "hooks:\n"
        "  apply-start:\n"
        "    - command: /usr/bin/logger\n"
        '      args: ["-t", "mig"]\n'
        "      envs: {B: '2', A: x}\n"
        "      workdir: /tmp\n"
        "      timeout: 5\n"
        "    - command: /bin/true\n"
        "  apply-exit: []\n",
        encoding="utf-8",
    )
    hooks = load_hooks(path)
    assert hooks.version == "v9"
    assert hooks.file == str(path)
    assert hooks.get("apply-start") == (
        HookSpec("/usr/bin/logger", ("-t", "mig"), (("A", "x"), ("B", "2")), "/tmp"),
        HookSpec("/bin/true"),
    )
    assert hooks.get("apply-exit") == ()
    assert hooks.get("pre-apply-mode") == ()


def test_empty_and_hookless_files_define_no_hooks() -> None:
    """An empty document, or one without `hooks`, is valid and defines nothing."""
    assert parse_hooks("").hooks == ()
    assert parse_hooks("version: v1\n").hooks == ()
    assert parse_hooks('{"version": "v1", "hooks": {}}').hooks == ()


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("- just\n- a list\n", 1, "must be a mapping"),
        ("hooks: [a, b]\n", 1, "hooks: expected a mapping"),
        ("hooks:\n  apply-start: /bin/true\n", 2, "hooks.apply-start: expected a list"),
        (
            "hooks:\n  apply-start:\n    - /bin/true\n",
            3,
            "hooks.apply-start[0]: expected a mapping",
        ),
        ("hooks:\n  apply-start:\n    - args: [x]\n", 3, "'command' must be a non-empty string"),
        ("hooks:\n  apply-start:\n    - command: 7\n", 3, "'command' must be a non-empty string"),
        ("hooks:\n  apply-start:\n    - command: x\n      args: [1, 2]\n", 4, "list of strings"),
        (
            "hooks:\n  apply-start:\n    - command: x\n      envs: {N: 1}\n",
            4,
            "'N' must map to a string",
        ),
        (
            "hooks:\n  apply-start:\n    - command: x\n      envs: [a]\n",
            4,
            "'envs' must be a mapping",
        ),
        ("hooks:\n  apply-start:\n    - command: x\n      workdir: [a]\n", 4, "'workdir' must be"),
        ("hooks:\n  apply-start: [\n", 3, "not valid YAML"),
    ],
)
def test_bad_structure_is_a_config_error_with_location(text: str, line: int, fragment: str) -> None:
    """Wrong types raise ConfigError naming the file, the line and the offending key."""
    with pytest.raises(ConfigError) as caught:
        parse_hooks(text, file="hooks.yaml")
    err = caught.value
    assert err.file == "hooks.yaml"
    assert err.line == line
    assert fragment in str(err)
    assert str(err).startswith(f"hooks.yaml:{line}:")


def test_unreadable_hooks_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing hooks file raises ConfigError naming it."""
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="cannot read hooks file") as caught:
        load_hooks(missing)
    assert caught.value.file == str(missing)
