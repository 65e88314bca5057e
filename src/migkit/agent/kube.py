"""The agent's Kubernetes side: one Node watched, labels patched, pods waited for, Events and
the per-node ConfigMap written. Objects travel as plain JSON dicts (only a few fields are read).

API errors that can pass (connection refused, 5xx, 429) are retried with capped backoff for
``retry_timeout`` seconds; others (403, 404, 422) raise :class:`KubeError` at once.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import attrs
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("migkit.agent")
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({0, 429, 500, 502, 503, 504})


class KubeError(Exception):
    """An API call failed for good (or kept failing until the retry deadline)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


def json_call(func: Callable[..., Any], request_timeout: float, *args: Any, **kwargs: Any) -> Any:
    """Call a client method without its model classes: the response's JSON as plain data
    (None for an empty body), the connection released."""
    resp = func(*args, _preload_content=False, _request_timeout=request_timeout, **kwargs)
    try:
        data = resp.data
    finally:
        resp.release_conn()
    return json.loads(data) if data else None


def call_with_retries(what: str, func: Callable[[], T], limit: float, *, log_retries: bool = False) -> T:
    """Run ``func``; retry errors worth retrying (:func:`is_retryable`) with capped backoff for
    up to ``limit`` seconds. Raises :class:`KubeError` saying what failed and why."""
    deadline = time.monotonic() + limit
    delays = backoff_delays()
    attempt = 0
    while True:
        attempt += 1
        try:
            return func()
        except Exception as err:
            if not is_retryable(err):
                status = int(err.status) if isinstance(err, ApiException) and err.status else None
                raise KubeError(f"{what}: {describe(err)}", status) from None
            delay = next(delays)
            if time.monotonic() + delay > deadline:
                raise KubeError(f"{what}: {describe(err)} (gave up after {attempt} attempts)") from None
            if log_retries:
                log.warning("%s: %s; retrying in %.1fs (attempt %d)", what, describe(err), delay, attempt)
            time.sleep(delay)


def watch_events(resp: Any, what: str, chunk: int = 4096) -> Iterator[tuple[str, dict[str, Any]]]:
    """The (type, object) events of a watch response streamed line by line; :class:`Gone` on
    410 (list again), :class:`KubeError` on any other error event. The connection is released
    however the iteration ends."""
    try:
        buffer = b""
        for data in resp.stream(chunk, decode_content=True):
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(obj.get("message", "resource version too old"))
                    raise KubeError(f"{what}: {obj.get('message', obj)}", obj.get("code"))
                yield kind, obj
    finally:
        resp.release_conn()


def load_api_client(kubeconfig: str | None) -> Any:
    """In-cluster config when running in a Pod without KUBECONFIG, else the kubeconfig file."""
    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    try:
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config()


def backoff_delays(first: float = 0.2, cap: float = 10.0) -> Iterator[float]:
    """Exponential backoff with jitter, capped."""
    delay = first
    while True:
        yield delay * (0.75 + random.random() / 2)
        delay = min(cap, delay * 2)


def is_retryable(err: BaseException) -> bool:
    """Whether an API error can pass: connection errors, 429 and the 5xx of an overloaded or restarting server."""
    if isinstance(err, ApiException):
        return int(err.status or 0) in RETRYABLE_STATUS
    return isinstance(err, (urllib3.exceptions.HTTPError, OSError))


def describe(err: BaseException) -> str:
    """One line for an API error: ``HTTP <status>: <the server's message>``, else the exception."""
    if isinstance(err, ApiException):
        reason = err.reason
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            reason = json.loads(err.body or "").get("message", reason)
        return f"HTTP {err.status}: {reason}"
    return f"{type(err).__name__}: {err}"


@attrs.define
class Kube:
    api_client: Any
    node_name: str
    retry_timeout: float = 300.0
    stop: threading.Event = attrs.Factory(threading.Event)
    request_timeout: float = 15.0
    component: str = "migkit-agent"
    core: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)

    # ------------------------------------------------------------------ plumbing

    def _json(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return json_call(func, self.request_timeout, *args, **kwargs)

    def call(self, what: str, func: Callable[[], T], *, retry_timeout: float | None = None) -> T:
        """Run ``func``; retry passing errors with capped backoff until the deadline."""
        limit = self.retry_timeout if retry_timeout is None else retry_timeout
        return call_with_retries(what, func, limit, log_retries=True)

    # ------------------------------------------------------------------ the node

    def list_node(self) -> tuple[dict[str, Any] | None, str]:
        """This node (None when it does not exist) and the list's resourceVersion."""
        doc = self._json(self.core.list_node, field_selector=f"metadata.name={self.node_name}")
        items = doc.get("items") or []
        return (items[0] if items else None), str(doc["metadata"]["resourceVersion"])

    def watch_node(self, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict[str, Any]]]:
        """Watch events of this node from ``resource_version``; raises :class:`Gone` on 410."""
        resp = self.core.list_node(
            field_selector=f"metadata.name={self.node_name}",
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _preload_content=False,
            _request_timeout=(self.request_timeout, timeout_seconds + 15),
        )
        yield from watch_events(resp, "watch", 4096)

    def read_node(self) -> dict[str, Any]:
        return self.call("read node", lambda: self._json(self.core.read_node, self.node_name))

    def patch_node_metadata(
        self, what: str, *, labels: Mapping[str, str | None] | None = None,
        annotations: Mapping[str, str | None] | None = None,
    ) -> dict[str, Any]:
        """One JSON merge patch of labels and annotations (None deletes a key)."""
        meta: dict[str, Any] = {}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {"metadata": meta}

        def patch() -> Any:
            return self._json(self.core.patch_node, self.node_name, body,
                              _content_type="application/merge-patch+json")

        return self.call(what, patch)

    # ------------------------------------------------------------------ pods

    def pods_on_node(self, namespace: str | None, label_selector: str | None = None) -> list[dict[str, Any]]:
        selector = f"spec.nodeName={self.node_name}"

        def list_pods() -> Any:
            if namespace is None:
                return self._json(self.core.list_pod_for_all_namespaces, field_selector=selector,
                                  label_selector=label_selector or "")
            return self._json(self.core.list_namespaced_pod, namespace, field_selector=selector,
                              label_selector=label_selector or "")

        doc = self.call(f"list pods on {self.node_name}", list_pods)
        return list(doc.get("items") or [])

    def delete_pod(self, namespace: str, name: str) -> None:
        def delete() -> None:
            try:
                self._json(self.core.delete_namespaced_pod, name, namespace)
            except ApiException as err:
                if err.status != 404:
                    raise

        self.call(f"delete pod {namespace}/{name}", delete)

    def set_unschedulable(self, value: bool) -> None:
        """Cordon (True) or uncordon (False) this node."""
        body = {"spec": {"unschedulable": value or None}}
        self.call("cordon" if value else "uncordon", lambda: self._json(
            self.core.patch_node, self.node_name, body, _content_type="application/merge-patch+json"))

    def evict(self, namespace: str, name: str) -> bool:
        """Ask the Eviction API to evict a pod; False while a PodDisruptionBudget forbids it (429)."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}

        def evict() -> bool:
            try:
                self._json(self.core.create_namespaced_pod_eviction, name, namespace, body)
            except ApiException as err:
                if err.status == 404:
                    return True
                if err.status == 429:
                    return False
                raise
            return True

        # 429 is the PDB's answer here, not overload: handled by the caller's deadline
        return self.call(f"evict pod {namespace}/{name}", evict)

    # ------------------------------------------------------------------ events and the ConfigMap

    def event(self, node_uid: str, reason: str, message: str, *, warning: bool = False) -> None:
        """A core/v1 Event about this Node (best effort: a failed Event is logged, not fatal)."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            # <node>.<nanoseconds in hex>: unique, and sorts in the order the Events were made
            "metadata": {"name": f"{self.node_name}.{time.time_ns():x}", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": self.node_name, "uid": node_uid, "apiVersion": "v1"},
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.component, "host": self.node_name},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.node_name,
        }
        try:
            self.call("create event", lambda: self._json(self.core.create_namespaced_event, "default", body),
                      retry_timeout=min(self.retry_timeout, 30.0))
        except KubeError as err:
            log.warning("could not record event %s: %s", reason, err)

    def put_config_map(
        self, namespace: str, name: str, data: Mapping[str, str], owner: Mapping[str, str] | None
    ) -> bool:
        """Create or update a ConfigMap; True when something was written."""
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": self.component},
        }
        if owner:
            metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner["name"],
                                            "uid": owner["uid"], "controller": True}]
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": dict(data)}

        def put() -> bool:
            try:
                current = self._json(self.core.read_namespaced_config_map, name, namespace)
            except ApiException as err:
                if err.status != 404:
                    raise
                self._json(self.core.create_namespaced_config_map, namespace, body)
                return True
            if current.get("data") == body["data"] and (
                not owner or current["metadata"].get("ownerReferences") == metadata.get("ownerReferences")
            ):
                return False
            metadata["resourceVersion"] = current["metadata"]["resourceVersion"]
            self._json(self.core.replace_namespaced_config_map, name, namespace, body)
            return True

        return self.call(f"write ConfigMap {namespace}/{name}", put)
