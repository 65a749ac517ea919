"""ctreg's presets."""
from __future__ import annotations

from .common import MethodOutput, Pair


def preset(name: str):
    def run(pair: Pair, threads: int) -> MethodOutput:
        import ctreg
        from ctreg.pipeline import register

        ctreg.set_num_threads(threads)
        result = register(pair.reference, pair.floating, preset=name)
        return MethodOutput(result.transform_points, result.displacement)
    run.__name__ = f"ctreg_{name}"
    return run
