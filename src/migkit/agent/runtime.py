"""The running agent: the watch of its Node, the worker that reconciles, signals, the server."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs

from migkit.agent import labels as L
from migkit.agent.host import Host, PrefixRunner
from migkit.agent.kube import Gone, Kube, KubeError, backoff_delays, load_api_client
from migkit.agent.node_ops import NodeOps, NodeOpsError, file_digest
from migkit.agent.observe import Health, Metrics, serve, setup_logging
from migkit.agent.reconcile import Handled, Reconciler, Trigger, decide_trigger
from migkit.agent.settings import Settings, SettingsError, parse_settings

log = logging.getLogger("migkit.agent")

WATCH_TIMEOUT_S = 240


@attrs.define
class NodeWatch:
    """List, then watch, this one Node; keeps the latest object and wakes the worker on change.

    Resumes from the last resourceVersion, lists again on 410 Gone, reconnects with capped
    backoff on any other error.
    """

    kube: Kube
    stop: threading.Event
    health: Health
    changed: threading.Event = attrs.Factory(threading.Event)
    latest: dict[str, Any] | None = None
    lock: threading.Lock = attrs.Factory(threading.Lock)
    lists: int = 0

    def _deliver(self, obj: dict[str, Any] | None) -> None:
        with self.lock:
            self.latest = obj
        self.changed.set()

    def snapshot(self) -> dict[str, Any] | None:
        with self.lock:
            return self.latest

    def run(self) -> None:
        version: str | None = None
        delays = backoff_delays(0.5, 10.0)
        while not self.stop.is_set():
            self.health.beat("watch")
            try:
                if version is None:
                    obj, version = self.kube.list_node()
                    self.lists += 1
                    self._deliver(obj)
                    self.health.ready.set()
                    if obj is None:
                        log.warning("node %s does not exist (yet)", self.kube.node_name)
                for kind, obj in self.kube.watch_node(version, WATCH_TIMEOUT_S):
                    self.health.beat("watch")
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind == "BOOKMARK":
                        continue
                    self._deliver(None if kind == "DELETED" else obj)
                    if self.stop.is_set():
                        return
                delays = backoff_delays(0.5, 10.0)  # a watch that ended cleanly resets the backoff
            except Gone as err:
                log.info("watch expired (%s); listing again", err)
                version = None
            except Exception as err:
                delay = next(delays)
                log.warning("watch of node %s failed: %s; reconnecting in %.1fs",
                            self.kube.node_name, err, delay)
                if self.stop.wait(delay):
                    return


@attrs.define
class ConfigSource:
    """Where the MIG config comes from: CONFIG_FILE, else the generated one, else DEFAULT_CONFIG_FILE."""

    settings: Settings
    ops: NodeOps
    kube: Kube
    published: str | None = None

    def generated(self) -> str | None:
        try:
            return self.ops.generated_config()
        except NodeOpsError as err:
            log.warning("%s", err)
            return None

    def publish(self, text: str | None) -> None:
        s = self.settings
        if not s.publish_config or text is None or text == self.published:
            return
        owner = {"name": s.pod_name, "uid": s.pod_uid} if s.pod_name and s.pod_uid else None
        try:
            if self.kube.put_config_map(s.pod_namespace, f"{s.node_name}-mig-config", {"config.yaml": text}, owner):
                log.info("published ConfigMap %s/%s-mig-config", s.pod_namespace, s.node_name)
            self.published = text
        except KubeError as err:
            log.warning("could not publish the generated config: %s", err)

    def load(self) -> tuple[Any, str | None]:
        """(config or None, the error when it cannot be used)."""
        s = self.settings
        generated = self.generated()
        self.publish(generated)
        if s.config_file:
            path = s.config_file
        elif generated is not None:
            try:
                return self.ops.load_text(generated, "<generated config>"), None
            except NodeOpsError as err:
                return None, str(err)
        else:
            path = s.default_config_file
        try:
            return self.ops.load(path), None
        except NodeOpsError as err:
            return None, str(err)

    def digest(self) -> str | None:
        return file_digest(self.settings.config_file) if self.settings.config_file else None


def run_agent(settings: Settings) -> int:
    stop = threading.Event()
    setup_logging(settings.log_format, settings.log_level, settings.node_name)

    wake = threading.Event()  # set by the watch on a change, and by a signal

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current step, then stopping", signal.Signals(signum).name)
        stop.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    health = Health()
    metrics = Metrics()
    server = serve(settings.metrics_address, settings.metrics_port, metrics, health) if settings.metrics_port else None
    if server is not None:
        log.info("serving /metrics, /healthz, /readyz on %s:%d", *server.server_address[:2])

    kube = Kube(load_api_client(settings.kubeconfig), settings.node_name, settings.api_retry_timeout)
    ops = NodeOps.from_env()
    host = Host(PrefixRunner(settings.host_prefix), settings.host_root_mount, settings.reboot_command)
    watch = NodeWatch(kube, stop, health, wake)
    threading.Thread(target=watch.run, name="watch", daemon=True).start()
    reconciler = Reconciler(kube, ops, host, settings, stop, metrics)
    source = ConfigSource(settings, ops, kube)

    handled = Handled()
    rebooting = False
    poll = settings.config_poll_interval if settings.watch_config_file else 30.0
    while not stop.is_set():
        health.beat("worker")
        watch.changed.wait(poll)
        watch.changed.clear()
        if stop.is_set() or rebooting:
            continue
        node = watch.snapshot()
        if node is None:
            continue
        meta = node.get("metadata", {})
        node_labels = meta.get("labels") or {}
        annotations = meta.get("annotations") or {}
        metrics.state(node_labels.get(L.STATE_LABEL, ""))
        digest = source.digest() if settings.watch_config_file else None
        trigger = decide_trigger(node_labels, annotations, handled, digest)
        if trigger is Trigger.NONE:
            continue
        selected = node_labels[L.CONFIG_LABEL]
        log.info("reconfiguring to %r (%s)", selected, trigger.value, extra={"config": selected})
        config, error = source.load()
        retry = annotations.get(L.RETRY_ANNOTATION)
        health.busy.add("worker")
        try:
            outcome = reconciler.run(selected, config, error, retry)
        finally:
            health.busy.discard("worker")
            health.beat("worker")
        log.info("reconfiguration to %r ended %s in %.2fs", selected, outcome.state, outcome.seconds,
                 extra={"config": selected, "result": outcome.state, "seconds": round(outcome.seconds, 3)})
        handled = Handled(selected, retry, digest, True)
        rebooting = outcome.state == L.STATE_REBOOTING
        watch.changed.set()  # look again at once: the label may have moved while we worked
    log.info("stopped")
    if server is not None:
        server.shutdown()
    return 0


def main(argv: Sequence[str]) -> int:
    try:
        settings = parse_settings(argv)
    except SettingsError as err:
        print(f"migkit agent: error: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        return run_agent(settings)
    finally:
        log.debug("ran %.1fs", time.monotonic() - started)
