"""ctreg's presets."""

from __future__ import annotations

from .common import MethodOutput, Pair


def setup(threads: int) -> float:
    """Untimed, like an import: load Numba's compiled kernels from its cache (0.1-0.2 s once per
    process; SimpleITK's compiled code is loaded by its import, which is not timed either)."""
    import ctreg

    ctreg.set_num_threads(threads)
    return ctreg.ops.preload_kernels()


def preset(name: str):
    def run(pair: Pair, threads: int) -> MethodOutput:
        import ctreg
        from ctreg.pipeline import register

        ctreg.set_num_threads(threads)
        result = register(pair.reference, pair.floating, preset=name)
        return MethodOutput(result.transform_points, result.displacement)

    run.__name__ = f"ctreg_{name}"
    return run
