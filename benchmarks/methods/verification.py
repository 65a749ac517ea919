"""Rows that check the machinery rather than a method: identity (no registration, the initial
error) and the exact known map of a synthetic pair (target registration error ~ 0)."""

from __future__ import annotations

import numpy as np

from .common import MethodOutput, Pair


def identity(pair: Pair, threads: int) -> MethodOutput:
    return MethodOutput(
        lambda p: np.asarray(p, dtype=np.float64).copy(),
        np.zeros(pair.reference.shape + (3,), np.float32),
    )


def true_field(pair: Pair, threads: int) -> MethodOutput:
    from ctreg.synthetic import BreathingMap

    if not pair.info or "true_map" not in pair.info:
        raise ValueError(f"pair {pair.name!r} has no known map (only synthetic pairs do)")
    bmap = BreathingMap.from_dict(pair.info["true_map"])
    return MethodOutput(
        lambda p: bmap.inverse(np.asarray(p, dtype=np.float64)),
        bmap.displacement_on(pair.reference),
        notes="exact closed-form map; its time is the field evaluation, not a registration",
    )
