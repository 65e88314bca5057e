"""Resolving profile names against one GPU's own tables (``GpuModel``).

Pure: imports the name grammar (``migkit.names``), ``models`` and ``errors`` only.
"""

from __future__ import annotations

import difflib

import attrs

from migkit.errors import UnknownProfileError
from migkit.models import ComputeProfile, GpuModel, Profile
from migkit.names import ProfileName, parse_profile_name

__all__ = ["offered_names", "resolve"]


def _compute_candidates(profile: Profile, name: ProfileName) -> list[ComputeProfile]:
    candidates = [cp for cp in profile.compute_profiles if cp.slice_count == name.compute_slices]
    # Prefer a table entry spelled exactly like the request, then the CI with the most SMs
    # (the GI-wide CI nvidia-smi makes by default), then the lowest profile ID.
    candidates.sort(key=lambda cp: (cp.name != name.canonical, -cp.multiprocessors, cp.id))
    return candidates


def resolve(model: GpuModel, name: str) -> tuple[Profile, ComputeProfile | None]:
    """Resolve a (possibly compute-level) name against one GPU's own profile tables.

    Returns the GPU-instance profile and the compute profile a request for ``name`` creates:
    for ``1c.3g.40gb`` the 1-slice CI inside ``3g.40gb``; for a GI-level name such as
    ``3g.40gb`` the CI covering the whole GI (``None`` if the table lists no CI profiles).
    Raises :class:`UnknownProfileError` naming the GPU, the profile, what the GPU offers and,
    when only the GB differs from an offered name, that name.
    """
    try:
        parsed = parse_profile_name(name)
    except ValueError as err:
        raise UnknownProfileError(str(err)) from None
    profile = model.find_profile(parsed.gi_name)
    if profile is None:
        raise UnknownProfileError(_unknown_gi_message(model, name, parsed))
    candidates = _compute_candidates(profile, parsed)
    if not candidates:
        if not parsed.is_compute_level and not profile.compute_profiles:
            return profile, None
        offered = ", ".join(sorted({cp.name for cp in profile.compute_profiles})) or "none"
        raise UnknownProfileError(
            f"{name!r} is not a compute profile of {model.name} ({model.product_name}): "
            f"GPU instances of {profile.name} offer {offered}"
        )
    return profile, candidates[0]


def offered_names(model: GpuModel) -> tuple[str, ...]:
    """Every name that resolves on ``model`` (GI-level and compute-level), sorted."""
    names: set[str] = set()
    for profile in model.profiles:
        names.add(profile.name)
        gi = parse_profile_name(profile.name)
        for cp in profile.compute_profiles:
            names.add(attrs.evolve(gi, compute_slices=cp.slice_count).canonical)
    return tuple(sorted(names, key=_name_sort_key))


def _name_sort_key(name: str) -> tuple[int, int, int, str]:
    parsed = parse_profile_name(name)
    return (parsed.gpu_slices, parsed.memory_gb, parsed.compute_slices, parsed.suffix)


def _unknown_gi_message(model: GpuModel, name: str, parsed: ProfileName) -> str:
    if not model.profiles:
        return (
            f"{name!r} is not available on {model.name} ({model.product_name}): "
            f"it does not support MIG"
        )
    offered = offered_names(model)
    message = (
        f"{name!r} is not a MIG profile of {model.name} ({model.product_name}); "
        f"it offers: {', '.join(offered)}"
    )
    same_shape = [
        other
        for other in offered
        if (p := parse_profile_name(other)).gpu_slices == parsed.gpu_slices
        and p.compute_slices == parsed.compute_slices
        and p.attributes == parsed.attributes
        and p.negative == parsed.negative
    ]
    if same_shape:
        closest = min(
            same_shape, key=lambda o: abs(parse_profile_name(o).memory_gb - parsed.memory_gb)
        )
        return f"{message}. Did you mean {closest!r}?"
    close = difflib.get_close_matches(parsed.canonical, offered, n=1)
    if close:
        return f"{message}. Did you mean {close[0]!r}?"
    return message
