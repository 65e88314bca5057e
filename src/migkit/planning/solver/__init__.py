"""The exact placement solver: where every GPU instance and compute instance goes.

``solve(model, counts, existing=())`` returns a :class:`Layout` or raises
:class:`~migkit.errors.InfeasibleError` saying why nothing fits. It works on the GPU's own
placement tables (each profile's possible placements, as NVML lists them):

- a GPU instance (GI) sits at one of its profile's possible placements, counted in memory
  slices; GIs may not share a memory slice; a profile has at most ``instance_count`` GIs;
- while a ``+me.all`` GI exists only ``-me`` GIs may coexist with it;
- a compute instance (CI) sits at one of its CI profile's placements inside its GI, counted in
  compute slices; CIs of one GI may not share a compute slice.

Counts are compute-instance names, as in mig-parted configs. A GI-level name (``3g.40gb``)
is a GI holding one CI that covers it. Smaller CIs of the same GI profile (``1c.3g.40gb``,
``2c.3g.40gb``) are packed into as few GIs as their placements allow.

**Exactness.** The search is exhaustive over the placement tables (memoised on the remaining
counts and the occupied-slice bit mask), so it finds a layout whenever one exists and proves
infeasibility otherwise.

**Which layout (deterministic tie-break).** Among all layouts of the new GIs, the solver picks
the one whose *free* memory slices could still host the most GI placements, counted by
placement size from the largest down (so the free space is kept in the largest usable
blocks); ties go to the layout found first when profiles are taken largest first and each
one's placements in increasing start order. On an empty A100 this puts a lone ``1g.5gb`` at
slice 6 and a lone ``3g.20gb`` at 4, as the driver does, leaving 0-3 for a ``4g``.

**Existing instances.** With ``existing`` (the GIs on the GPU now), the solver keeps as many
of them as possible at their placements, with their CIs (exact: it tries keep-sets from the
largest down, and feasibility only shrinks as more are kept). An existing GI can be kept
when its profile is requested and each of its CIs is requested; requested CIs of that GI
profile may be added into its free compute slices (this also reuses a GI without CIs). Among
keep-sets of the same size it keeps the most CIs, then picks the best layout as above. A GI
marked ``in_use`` is always kept where it is, or the solve fails naming it. A kept GI never
loses some of its CIs: if a CI is not wanted, its whole GI is recreated.
"""

from migkit.planning.solver.layout import (
    Layout,
    PlacedCompute,
    PlacedInstance,
    describe_slices,
    in_use_by,
    slices_phrase,
)
from migkit.planning.solver.search import solve

__all__ = [
    "Layout",
    "PlacedCompute",
    "PlacedInstance",
    "describe_slices",
    "in_use_by",
    "slices_phrase",
    "solve",
]
