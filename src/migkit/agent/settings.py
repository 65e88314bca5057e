"""The agent's configuration: upstream ``nvidia-mig-manager``'s flags and environment variables,
plus migkit's own (each documented in docs/agent.md)."""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Mapping, Sequence

import attrs

DEFAULT_CONFIG_FILE = "/mig-parted-config/config-default.yaml"
HOST_STATE_FILE = "/etc/systemd/system/nvidia-mig-manager.service.d/override.conf"
CDI_HOOK_PATH = "/usr/local/nvidia/toolkit/nvidia-cdi-hook"
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "t", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "f", "n", ""})


class SettingsError(ValueError):
    """A flag or environment variable with a value the agent cannot use."""


def parse_bool(name: str, value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (true/false)")


@attrs.frozen
class Settings:
    node_name: str
    kubeconfig: str | None = None
    config_file: str | None = None
    default_config_file: str = DEFAULT_CONFIG_FILE
    gpu_clients_file: str | None = None
    default_gpu_clients_namespace: str = "default"
    host_root_mount: str = "/host"
    host_nvidia_dir: str = "/usr/local/nvidia"
    host_mig_manager_state_file: str = HOST_STATE_FILE
    host_kubelet_systemd_service: str = "kubelet.service"
    with_reboot: bool = False
    with_shutdown_host_gpu_clients: bool = False
    cdi_enabled: bool = False
    cdi_command: tuple[str, ...] = ()
    driver_root: str = "/run/nvidia/driver"
    driver_root_ctr_path: str = "/run/nvidia/driver"
    dev_root: str = ""
    dev_root_ctr_path: str = ""
    nvidia_cdi_hook_path: str = CDI_HOOK_PATH
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    # migkit's own
    host_exec: tuple[str, ...] = ()
    reboot_command: tuple[str, ...] = ("reboot",)
    skip_reset: bool = False
    operand_wait_timeout: float = 300.0
    client_wait_timeout: float = 300.0
    mode_change_settle: float = 30.0
    api_retry_timeout: float = 300.0
    drain: bool = False
    drain_timeout: float = 300.0
    watch_config_file: bool = False
    config_poll_interval: float = 30.0
    publish_config: bool = True
    log_format: str = "text"
    log_level: str = "info"
    metrics_address: str = "0.0.0.0"
    metrics_port: int = 8080

    @property
    def host_prefix(self) -> tuple[str, ...]:
        """The argv prefix that runs a command on the host."""
        return self.host_exec or ("chroot", self.host_root_mount)


def _env_default(env: Mapping[str, str], *names: str, default: str | None = None) -> str | None:
    for name in names:
        value = env.get(name)
        if value is not None and value != "":
            return value
    return default


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migkit agent",
        description="Kubernetes node agent: watch this node's nvidia.com/mig.config label and make the GPUs match.",
    )

    def opt(flag: str, *names: str, default: str | None = None, help: str, short: str | None = None) -> None:
        flags = [flag] if short is None else [flag, short]
        where = ", ".join(f"${n}" for n in names)
        p.add_argument(*flags, default=_env_default(env, *names, default=default), help=f"{help} [{where}]")

    def flag(name: str, env_name: str, help: str, short: str | None = None) -> None:
        flags = [name] if short is None else [name, short]
        p.add_argument(*flags, nargs="?", const="true", default=env.get(env_name, "false"),
                       help=f"{help} [${env_name}]")

    opt("--kubeconfig", "KUBECONFIG", help="kubeconfig file; in-cluster config when unset")
    opt("--node-name", "NODE_NAME", short="-n", help="the node to watch (required)")
    opt("--config-file", "CONFIG_FILE", short="-f", help="MIG config file; the generated config when unset")
    opt("--default-config-file", "DEFAULT_CONFIG_FILE", default=DEFAULT_CONFIG_FILE,
        help="config used when this node's profiles cannot be listed")
    opt("--gpu-clients-file", "GPU_CLIENTS_FILE", short="-g", help="host systemd services to stop while reconfiguring")
    opt("--default-gpu-clients-namespace", "DEFAULT_GPU_CLIENTS_NAMESPACE", short="-p", default="default",
        help="namespace of the GPU operand pods")
    opt("--host-root-mount", "HOST_ROOT_MOUNT", short="-m", default="/host", help="where the host's / is mounted")
    opt("--host-nvidia-dir", "HOST_NVIDIA_DIR", short="-i", default="/usr/local/nvidia",
        help="host directory of NVIDIA managed software")
    opt("--host-mig-manager-state-file", "HOST_MIG_MANAGER_STATE_FILE", short="-o",
        default=HOST_STATE_FILE, help="host systemd drop-in naming the selected config")
    opt("--host-kubelet-systemd-service", "HOST_KUBELET_SYSTEMD_SERVICE", short="-k", default="kubelet.service",
        help="kubelet's systemd unit, stopped across a MIG mode change with host-client shutdown")
    flag("--with-reboot", "WITH_REBOOT", "reboot the node when a MIG mode change does not take effect", short="-r")
    flag("--with-shutdown-host-gpu-clients", "WITH_SHUTDOWN_HOST_GPU_CLIENTS",
         "stop and restart the host GPU clients across a reconfiguration", short="-d")
    flag("--cdi-enabled", "CDI_ENABLED", "run the CDI step after a reconfiguration")
    opt("--cdi-command", "MIGKIT_AGENT_CDI_COMMAND", help="the CDI step's command line (none by default)")
    opt("--nvidia-driver-root", "NVIDIA_DRIVER_ROOT", "DRIVER_ROOT", short="-t", default="/run/nvidia/driver",
        help="driver root (CDI)")
    opt("--driver-root-ctr-path", "DRIVER_ROOT_CTR_PATH", short="-a", default="/run/nvidia/driver",
        help="driver root in the container (CDI)")
    opt("--dev-root", "NVIDIA_DEV_ROOT", short="-b", default="", help="device node root (CDI)")
    opt("--dev-root-ctr-path", "DEV_ROOT_CTR_PATH", short="-j", default="",
        help="device node root in the container (CDI)")
    opt("--nvidia-cdi-hook-path", "NVIDIA_CDI_HOOK_PATH", default=CDI_HOOK_PATH,
        help="nvidia-cdi-hook on the host (CDI)")
    opt("--reconfigure-script", "RECONFIGURE_SCRIPT", short="-s", help="accepted for compatibility; unused")
    opt("--host-exec", "MIGKIT_AGENT_HOST_EXEC",
        help="command prefix that runs a command on the host (default: chroot HOST_ROOT_MOUNT)")
    opt("--reboot-command", "MIGKIT_AGENT_REBOOT_COMMAND", default="reboot", help="run on the host to reboot it")
    flag("--skip-reset", "MIGKIT_AGENT_SKIP_RESET",
         "never reset a GPU for a MIG mode change (reboot instead, with --with-reboot)")
    opt("--operand-wait-timeout", "MIGKIT_AGENT_OPERAND_WAIT_TIMEOUT", default="300",
        help="seconds to wait for the operand pods to leave")
    opt("--client-wait-timeout", "MIGKIT_AGENT_CLIENT_WAIT_TIMEOUT", default="300",
        help="seconds to wait for gpu.deploy.client DaemonSet pods to leave")
    opt("--mode-change-settle", "MIGKIT_AGENT_MODE_CHANGE_SETTLE", default="30",
        help="seconds to let host services settle before a MIG mode change with host-client shutdown")
    opt("--api-retry-timeout", "MIGKIT_AGENT_API_RETRY_TIMEOUT", default="300",
        help="seconds an API call is retried (capped backoff) before the step fails")
    flag("--drain", "MIGKIT_AGENT_DRAIN",
         "cordon the node and evict its pods (Eviction API: PodDisruptionBudgets hold) before changing the GPUs")
    opt("--drain-timeout", "MIGKIT_AGENT_DRAIN_TIMEOUT", default="300",
        help="seconds for the evicted pods to leave")
    flag("--watch-config-file", "MIGKIT_AGENT_WATCH_CONFIG_FILE", "re-run when the config file's content changes")
    opt("--config-poll-interval", "MIGKIT_AGENT_CONFIG_POLL_INTERVAL", default="30",
        help="seconds between config file checks with --watch-config-file")
    flag("--no-publish-config", "MIGKIT_AGENT_NO_PUBLISH_CONFIG", "do not write the <node>-mig-config ConfigMap")
    opt("--log-format", "MIGKIT_AGENT_LOG_FORMAT", default="text", help="text or json")
    opt("--log-level", "MIGKIT_AGENT_LOG_LEVEL", default="info", help="debug, info, warning or error")
    opt("--metrics-address", "MIGKIT_AGENT_METRICS_ADDRESS", default="0.0.0.0",
        help="address of /metrics, /healthz, /readyz")
    opt("--metrics-port", "MIGKIT_AGENT_METRICS_PORT", default="8080",
        help="port of /metrics, /healthz, /readyz (0: off)")
    return p


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a number of seconds") from None
    if seconds < 0 or seconds != seconds:
        raise SettingsError(f"{name}={value!r} must be zero or more seconds")
    return seconds


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Settings:
    """Flags win over environment variables, which win over the defaults."""
    env = os.environ if env is None else env
    a = build_parser(env).parse_args(list(argv))
    if not a.node_name:
        raise SettingsError("the node name is required: --node-name or NODE_NAME")
    if a.log_format not in ("text", "json"):
        raise SettingsError(f"--log-format {a.log_format!r}: use text or json")
    try:
        port = int(a.metrics_port)
    except ValueError:
        raise SettingsError(f"--metrics-port {a.metrics_port!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise SettingsError(f"--metrics-port {port} is not a port number")
    return Settings(
        node_name=a.node_name,
        kubeconfig=a.kubeconfig or None,
        config_file=a.config_file or None,
        default_config_file=a.default_config_file,
        gpu_clients_file=a.gpu_clients_file or None,
        default_gpu_clients_namespace=a.default_gpu_clients_namespace,
        host_root_mount=a.host_root_mount,
        host_nvidia_dir=a.host_nvidia_dir,
        host_mig_manager_state_file=a.host_mig_manager_state_file,
        host_kubelet_systemd_service=a.host_kubelet_systemd_service,
        with_reboot=parse_bool("WITH_REBOOT", a.with_reboot),
        with_shutdown_host_gpu_clients=parse_bool("WITH_SHUTDOWN_HOST_GPU_CLIENTS", a.with_shutdown_host_gpu_clients),
        cdi_enabled=parse_bool("CDI_ENABLED", a.cdi_enabled),
        cdi_command=tuple(shlex.split(a.cdi_command or "")),
        driver_root=a.nvidia_driver_root,
        driver_root_ctr_path=a.driver_root_ctr_path,
        dev_root=a.dev_root,
        dev_root_ctr_path=a.dev_root_ctr_path,
        nvidia_cdi_hook_path=a.nvidia_cdi_hook_path,
        pod_name=env.get("POD_NAME", ""),
        pod_namespace=env.get("POD_NAMESPACE", "") or a.default_gpu_clients_namespace,
        pod_uid=env.get("POD_UID", ""),
        host_exec=tuple(shlex.split(a.host_exec or "")),
        reboot_command=tuple(shlex.split(a.reboot_command or "reboot")),
        skip_reset=parse_bool("MIGKIT_AGENT_SKIP_RESET", a.skip_reset),
        operand_wait_timeout=_seconds("--operand-wait-timeout", a.operand_wait_timeout),
        client_wait_timeout=_seconds("--client-wait-timeout", a.client_wait_timeout),
        mode_change_settle=_seconds("--mode-change-settle", a.mode_change_settle),
        api_retry_timeout=_seconds("--api-retry-timeout", a.api_retry_timeout),
        drain=parse_bool("MIGKIT_AGENT_DRAIN", a.drain),
        drain_timeout=_seconds("--drain-timeout", a.drain_timeout),
        watch_config_file=parse_bool("MIGKIT_AGENT_WATCH_CONFIG_FILE", a.watch_config_file),
        config_poll_interval=_seconds("--config-poll-interval", a.config_poll_interval) or 30.0,
        publish_config=not parse_bool("MIGKIT_AGENT_NO_PUBLISH_CONFIG", a.no_publish_config),
        log_format=a.log_format,
        log_level=a.log_level,
        metrics_address=a.metrics_address,
        metrics_port=port,
    )
