"""One reconfiguration of this node: the sequence of upstream's MIG Manager with migkit's rules.

Each step reads what it needs afresh and either returns or raises :class:`StepFailed`; the
driver (:meth:`Reconciler.run`) owns the clean-up, so every path ends in ``success`` or
``failed`` with the paused labels restored and the stopped host services started again.
The decisions are pure functions (:func:`decide_trigger`, :func:`after_assert`,
:func:`after_mode_apply`) so they are tested without a cluster.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from migkit.agent import labels as L
from migkit.agent.host import Host, HostError, load_gpu_clients, run_local
from migkit.agent.kube import KubeError
from migkit.agent.node_ops import NodeOps, NodeOpsError

log = logging.getLogger("migkit.agent")


class StepFailed(Exception):
    """A step could not complete; ``step`` names it for the state's Event and the metrics."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step


class Interrupted(StepFailed):
    def __init__(self, step: str) -> None:
        super().__init__(step, f"stopped by SIGTERM before {step}")


class KubeLike(Protocol):
    node_name: str

    def read_node(self) -> dict[str, Any]: ...
    def patch_node_metadata(
        self, what: str, *, labels: Mapping[str, str | None] | None = ...,
        annotations: Mapping[str, str | None] | None = ...,
    ) -> dict[str, Any]: ...
    def pods_on_node(self, namespace: str | None, label_selector: str | None = ...) -> list[dict[str, Any]]: ...
    def delete_pod(self, namespace: str, name: str) -> None: ...
    def set_unschedulable(self, value: bool) -> None: ...
    def evict(self, namespace: str, name: str) -> bool: ...
    def event(self, node_uid: str, reason: str, message: str, *, warning: bool = ...) -> None: ...


class Observer(Protocol):
    """Metrics and health: told about states and outcomes."""

    def state(self, value: str) -> None: ...
    def finished(self, result: str, seconds: float, step: str | None, config: str) -> None: ...


# ---------------------------------------------------------------------------- pure decisions


class Trigger(enum.Enum):
    NONE = "none"
    START = "agent start"
    LABEL = "label changed"
    RETRY = "retry annotation"
    CONFIG_FILE = "config file changed"


@attrs.frozen
class Handled:
    """What the agent last acted on."""

    label: str | None = None
    retry: str | None = None
    config_digest: str | None = None
    started: bool = False


def decide_trigger(
    labels: Mapping[str, str], annotations: Mapping[str, str], handled: Handled, config_digest: str | None
) -> Trigger:
    """Whether the node's metadata now asks for a run, and why.

    No label: nothing to do (upstream ignores a removal). The first look runs the label; a new
    value runs it; a retry annotation value not yet handled re-runs it; with config watching,
    a changed file digest re-runs it.
    """
    selected = labels.get(L.CONFIG_LABEL)
    if not selected:
        return Trigger.NONE
    if not handled.started:
        return Trigger.START
    if selected != handled.label:
        return Trigger.LABEL
    retry = annotations.get(L.RETRY_ANNOTATION)
    if retry and retry != handled.retry and retry != annotations.get(L.HANDLED_RETRY_ANNOTATION):
        return Trigger.RETRY
    if config_digest is not None and handled.config_digest is not None and config_digest != handled.config_digest:
        return Trigger.CONFIG_FILE
    return Trigger.NONE


def paused_labels(node_labels: Mapping[str, str]) -> dict[str, str]:
    """The deploy labels currently paused by a MIG change (left by us or a crashed run)."""
    return {k: v for k, v in node_labels.items() if k.startswith(L.DEPLOY_PREFIX) and v == L.PAUSED}


def reboot_guard(current_state: str | None, mode_gpus: Sequence[int]) -> str | None:
    """The failure message when a mode change is still needed after the reboot we asked for."""
    if mode_gpus and current_state == L.STATE_REBOOTING:
        gpus = ", ".join(str(i) for i in mode_gpus)
        return f"the MIG mode of GPU {gpus} is still wrong after a reboot; not rebooting again"
    return None


# ---------------------------------------------------------------------------- the driver


@attrs.define
class Outcome:
    state: str
    step: str | None = None
    message: str = ""
    seconds: float = 0.0
    disrupted: bool = False


@attrs.define
class Reconciler:
    kube: KubeLike
    ops: NodeOps
    host: Host
    settings: Any  # migkit.agent.settings.Settings
    stop: threading.Event
    observer: Observer | None = None

    # per-run bookkeeping
    _paused: bool = False
    _stopped_services: list[str] = attrs.Factory(list)
    _cordoned: bool = False
    _node_uid: str = ""

    def _check_stop(self, before: str) -> None:
        if self.stop.is_set():
            raise Interrupted(before)

    def _set_state(self, state: str, reason: str, message: str, *, warning: bool = False,
                   extra_annotations: Mapping[str, str | None] | None = None) -> None:
        # The Event first, so whoever sees the state label finds its Event already there.
        self.kube.event(self._node_uid, reason, message, warning=warning)
        self.kube.patch_node_metadata(f"set {L.STATE_LABEL}={state}", labels={L.STATE_LABEL: state},
                                      annotations=extra_annotations)
        log.info("state %s: %s", state, message, extra={"state": state, "reason": reason})
        if self.observer is not None:
            self.observer.state(state)

    def run(self, selected: str, config: Any, config_error: str | None, retry_value: str | None) -> Outcome:
        """Reconfigure to ``selected``; always ends in a terminal state (or ``rebooting``)."""
        started = time.monotonic()
        self._paused = False
        self._stopped_services = []
        self._cordoned = False
        handled_retry = {L.HANDLED_RETRY_ANNOTATION: retry_value} if retry_value else None
        try:
            outcome = self._sequence(selected, config, config_error, handled_retry)
        except StepFailed as failure:
            outcome = self._fail(selected, failure, handled_retry)
        except Exception as err:  # an unforeseen error still ends in `failed`
            log.exception("unexpected error while reconfiguring")
            outcome = self._fail(selected, StepFailed("internal", f"{type(err).__name__}: {err}"), handled_retry)
        outcome.seconds = time.monotonic() - started
        if self.observer is not None and outcome.state in L.TERMINAL_STATES:
            self.observer.finished(outcome.state, outcome.seconds, outcome.step, selected)
        return outcome

    # The MIG Manager's reconfigure sequence, in its order.
    def _sequence(
        self, selected: str, config: Any, config_error: str | None, handled_retry: Mapping[str, str] | None
    ) -> Outcome:
        s = self.settings
        try:
            node = self.kube.read_node()
        except KubeError as err:
            raise StepFailed("read-node", str(err)) from None
        self._node_uid = node["metadata"].get("uid", "")
        node_labels: dict[str, str] = node["metadata"].get("labels") or {}
        current_state = node_labels.get(L.STATE_LABEL)

        # valid-config check: a bad file or an unknown/infeasible selection disrupts nothing
        if config_error is not None:
            raise StepFailed("valid-config", config_error)
        valid = self.ops.valid(config, selected)
        if not valid.ok:
            raise StepFailed("valid-config", f"config {selected!r} cannot be applied to this node: {valid.detail}")

        check = self.ops.assert_config(config, selected)
        if check.ok:
            leftover = paused_labels(node_labels)
            if leftover:  # a run that died with operands paused: bring them back
                self.kube.patch_node_metadata("restore deploy labels", labels=L.restore_patch(node_labels))
            if current_state != L.STATE_SUCCESS or leftover or handled_retry:
                self._set_state(L.STATE_SUCCESS, "MigConfigApplied",
                                f"MIG config {selected!r} already applied; nothing changed",
                                extra_annotations=handled_retry)
            else:
                log.info("MIG config %r already applied and recorded; nothing to do", selected)
            return Outcome(L.STATE_SUCCESS)

        self._check_stop("host-state-file")
        try:
            if self.host.write_selected_config(s.host_mig_manager_state_file, selected):
                log.info("host state file %s now selects %r", s.host_mig_manager_state_file, selected)
        except HostError as err:
            raise StepFailed("host-state-file", str(err)) from None

        try:
            mode_gpus = self.ops.mode_change_gpus(config, selected)
        except NodeOpsError as err:
            raise StepFailed("mode-check", str(err)) from None
        guard = reboot_guard(current_state, mode_gpus)
        if guard is not None:
            raise StepFailed("mode-check", guard)

        self._set_state(L.STATE_PENDING, "MigConfigPending",
                        f"reconfiguring to {selected!r}: {check.detail}"
                        + (f"; MIG mode change on GPU {', '.join(map(str, mode_gpus))}" if mode_gpus else ""))

        self._check_stop("pause-operands")
        self._pause(node_labels)
        self._wait_for_operands()
        if s.drain:
            self._check_stop("drain")
            self._drain(node)
        self._check_stop("stop-host-clients")
        self._stop_host_clients(mode_change=bool(mode_gpus))

        if mode_gpus:
            self._check_stop("mode-apply")
            rebooting = self._mode_apply(config, selected, mode_gpus)
            if rebooting:
                return Outcome(L.STATE_REBOOTING, disrupted=True)

        self._check_stop("apply")
        result = self.ops.apply(config, selected, skip_reset=s.skip_reset)
        if not result.ok:
            raise StepFailed("apply", result.summary)
        # From here on the GPUs are changed: a SIGTERM waits for the run to finish.
        verify = self.ops.assert_config(config, selected)
        if not verify.ok:
            raise StepFailed("verify", f"applied, but the node does not match {selected!r}: {verify.detail}")

        if s.cdi_enabled and s.cdi_command:
            try:
                run_local(s.cdi_command)
            except HostError as err:
                raise StepFailed("cdi", str(err)) from None

        self._restart_services()
        self._delete_pods(L.VALIDATOR_APPS_AFTER)
        self._restore()
        self._set_state(L.STATE_SUCCESS, "MigConfigApplied", f"MIG config {selected!r} applied and verified",
                        extra_annotations=handled_retry)
        return Outcome(L.STATE_SUCCESS, disrupted=True)

    # ------------------------------------------------------------------ steps

    def _pause(self, node_labels: Mapping[str, str]) -> None:
        patch = L.pause_patch(node_labels)
        self._paused = True  # set first: a patch that lands but whose answer is lost is restored too
        try:
            self.kube.patch_node_metadata("pause operands", labels=patch)
        except KubeError as err:
            raise StepFailed("pause-operands", str(err)) from None
        log.info("operands paused: %s", ", ".join(f"{k}={v}" for k, v in patch.items()))

    def _wait(self, what: str, timeout: float, remaining: Any) -> None:
        """Poll ``remaining()`` (names still there) until empty, the deadline, or SIGTERM."""
        deadline = time.monotonic() + timeout
        interval = 0.2
        while True:
            try:
                left = remaining()
            except KubeError as err:
                raise StepFailed(f"wait-{what}", str(err)) from None
            if not left:
                return
            if time.monotonic() >= deadline:
                raise StepFailed(f"wait-{what}",
                                 f"timed out after {timeout:g}s waiting for {what} to leave: {', '.join(left)}")
            log.debug("waiting for %s to leave: %s", what, ", ".join(left))
            if self.stop.wait(min(interval, max(0.0, deadline - time.monotonic()))):
                raise Interrupted(f"wait-{what}")
            interval = min(2.0, interval * 1.5)

    def _wait_for_operands(self) -> None:
        ns = self.settings.default_gpu_clients_namespace
        selector = f"app in ({', '.join(L.OPERAND_APPS)})"

        def operand_pods() -> list[str]:
            return [f"{ns}/{p['metadata']['name']}" for p in self.kube.pods_on_node(ns, selector)]

        self._wait("operand pods", self.settings.operand_wait_timeout, operand_pods)

        def client_pods() -> list[str]:
            found = []
            for p in self.kube.pods_on_node(None):
                owners = p["metadata"].get("ownerReferences") or []
                selector_keys = (p.get("spec") or {}).get("nodeSelector") or {}
                if any(o.get("kind") == "DaemonSet" for o in owners) and L.CLIENT_DEPLOY_LABEL in selector_keys:
                    found.append(f"{p['metadata']['namespace']}/{p['metadata']['name']}")
            return found

        self._wait("gpu.deploy.client pods", self.settings.client_wait_timeout, client_pods)
        self._delete_pods(L.VALIDATOR_APPS_BEFORE)

    def _drain(self, node: Mapping[str, Any]) -> None:
        """Cordon (unless already cordoned by someone else) and evict every pod that is not a
        DaemonSet's or a static pod, through the Eviction API; wait for them to leave."""
        if not (node.get("spec") or {}).get("unschedulable"):
            self._cordoned = True  # first: a cordon whose answer is lost is undone too
            try:
                self.kube.set_unschedulable(True)
            except KubeError as err:
                raise StepFailed("drain", str(err)) from None
            log.info("node cordoned")

        def evictable() -> list[tuple[str, str, bool]]:
            out = []
            for p in self.kube.pods_on_node(None):
                meta = p["metadata"]
                owners = meta.get("ownerReferences") or []
                if any(o.get("kind") == "DaemonSet" for o in owners):
                    continue
                if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
                    continue
                if (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                out.append((meta["namespace"], meta["name"], bool(meta.get("deletionTimestamp"))))
            return out

        def remaining() -> list[str]:
            left = []
            for namespace, name, terminating in evictable():
                if not terminating and not self.kube.evict(namespace, name):
                    left.append(f"{namespace}/{name} (a PodDisruptionBudget allows no disruption now)")
                else:
                    left.append(f"{namespace}/{name}")
            return left

        self._wait("evicted pods", self.settings.drain_timeout, remaining)

    def _delete_pods(self, apps: Sequence[str]) -> None:
        ns = self.settings.default_gpu_clients_namespace
        try:
            for pod in self.kube.pods_on_node(ns, f"app in ({', '.join(apps)})"):
                self.kube.delete_pod(ns, pod["metadata"]["name"])
                log.info("deleted validator pod %s/%s", ns, pod["metadata"]["name"])
        except KubeError as err:
            raise StepFailed("delete-validators", str(err)) from None

    def _stop_host_clients(self, *, mode_change: bool) -> None:
        s = self.settings
        if not s.with_shutdown_host_gpu_clients:
            return
        try:
            services = list(load_gpu_clients(s.gpu_clients_file))
        except HostError as err:
            raise StepFailed("stop-host-clients", str(err)) from None
        if mode_change:
            services.append(s.host_kubelet_systemd_service)
        try:
            self._stopped_services = self.host.stop_active(services)
        except HostError as err:
            self._stopped_services = list(getattr(err, "stopped", []))
            raise StepFailed("stop-host-clients", str(err)) from None
        if self._stopped_services:
            log.info("stopped host services: %s", ", ".join(self._stopped_services))
        if mode_change and s.mode_change_settle > 0:
            log.info("sleeping %gs before the MIG mode change: host GPU clients (fabric manager) settle",
                     s.mode_change_settle)
            if self.stop.wait(s.mode_change_settle):
                raise Interrupted("mode-apply")

    def _mode_apply(self, config: Any, selected: str, mode_gpus: Sequence[int]) -> bool:
        """Change the MIG mode; True when the node is now rebooting."""
        s = self.settings
        result = self.ops.apply(config, selected, mode_only=True, skip_reset=s.skip_reset)
        if not result.ok:
            raise StepFailed("mode-apply", result.summary)
        check = self.ops.assert_config(config, selected, mode_only=True)
        if check.ok:
            return False
        if not s.with_reboot:
            raise StepFailed("mode-apply", f"the MIG mode change did not take effect (reboot needed; "
                                           f"WITH_REBOOT is off): {check.detail}")
        gpus = ", ".join(map(str, mode_gpus))
        try:
            self._set_state(L.STATE_REBOOTING, "MigConfigRebooting",
                            f"rebooting: the MIG mode change of GPU {gpus} needs a reboot ({check.detail})")
        except KubeError as err:
            raise StepFailed("rebooting", f"could not record {L.STATE_REBOOTING}, so not rebooting: {err}") from None
        try:
            self.host.reboot()
        except HostError as err:
            raise StepFailed("reboot", str(err)) from None
        log.info("reboot requested; waiting to be stopped")
        return True

    # ------------------------------------------------------------------ clean-up

    def _restart_services(self) -> list[str]:
        if not self._stopped_services:
            return []
        problems = self.host.start(self._stopped_services)
        started = self._stopped_services
        self._stopped_services = []
        if problems:
            log.error("host services not restarted: %s", "; ".join(problems))
        else:
            log.info("restarted host services: %s", ", ".join(reversed(started)))
        return problems

    def _restore(self) -> None:
        if self._cordoned:
            self.kube.set_unschedulable(False)
            self._cordoned = False
            log.info("node uncordoned")
        node = self.kube.read_node()
        node_labels = node["metadata"].get("labels") or {}
        if self._paused or paused_labels(node_labels):
            self.kube.patch_node_metadata("restore deploy labels", labels=L.restore_patch(node_labels))
            self._paused = False

    def _fail(self, selected: str, failure: StepFailed, handled_retry: Mapping[str, str] | None) -> Outcome:
        disrupted = self._paused or bool(self._stopped_services) or self._cordoned
        message = f"MIG config {selected!r} not applied: {failure.step}: {failure}"
        log.error("%s", message, extra={"step": failure.step})
        problems = self._restart_services()
        if problems:
            message += "; host services not restarted: " + "; ".join(problems)
        # Labels and state must land even if the API server is away for a while: retry for as long
        # as the process lives (a SIGTERM'd agent still has its grace period).
        deadline = time.monotonic() + max(self.settings.api_retry_timeout, 60.0)
        while True:
            try:
                self._restore()
                self._set_state(L.STATE_FAILED, "MigConfigFailed", message, warning=True,
                                extra_annotations=handled_retry)
                break
            except KubeError as err:
                if time.monotonic() > deadline:
                    log.error("could not record the failure: %s", err)
                    break
                log.warning("recording the failure: %s; retrying", err)
                time.sleep(1.0)
        return Outcome(L.STATE_FAILED, failure.step, message, disrupted=disrupted)
