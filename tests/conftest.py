"""Shared test configuration: the Hypothesis profiles (HYPOTHESIS_PROFILE=dev, ci or long), and
the session's Kubernetes control plane, one for the agent and the fleet tests together."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from k8s_cluster import cluster, control_plane

# pytest finds fixtures among a conftest's names: these are the shared control plane's.
K8S_FIXTURES = (cluster, control_plane)

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("long", max_examples=10_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

