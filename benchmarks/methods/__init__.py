"""The registration methods the benchmark compares; each runs in its own process.

A method is a :class:`Method`: ``available()`` returns None or why it cannot run here (a missing
package), ``setup(threads)`` (optional) does the library's untimed start-up work, like an
import, and returns its seconds; ``run(pair, threads)`` registers ``pair.floating`` onto
``pair.reference`` and returns a :class:`~methods.common.MethodOutput`.  Only ``run`` is timed.
To add one, write a function and append a Method to METHODS.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

from . import ctreg_methods, other_methods, sitk_methods, verification
from .common import MethodOutput, Pair

__all__ = ["Method", "METHODS", "MethodOutput", "Pair"]


#: the pip package that provides an importable module
_PACKAGES = {"SimpleITK": "SimpleITK", "itk": "itk-elastix", "ants": "antspyx", "dipy": "dipy"}


def _needs(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if not missing:
            return None
        pkgs = " ".join(_PACKAGES.get(m, m) for m in missing)
        return f"not installed: {', '.join(missing)} (pip install {pkgs})"

    return check


@dataclass(frozen=True)
class Method:
    name: str
    group: str  # "verification", "ctreg", "simpleitk", "other"
    description: str
    run: Callable[[Pair, int], MethodOutput]
    available: Callable[[], str | None] = lambda: None
    needs_truth: bool = False  # only on synthetic pairs (true field)
    setup: Callable[[int], float] | None = None  # untimed start-up; its seconds are recorded


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        Method(
            "identity",
            "verification",
            "no registration: the initial misalignment",
            verification.identity,
        ),
        Method(
            "true-field",
            "verification",
            "the exact known map (synthetic pairs): TRE must be ~0",
            verification.true_field,
            needs_truth=True,
        ),
        Method(
            "ctreg-fast",
            "ctreg",
            "ctreg.register(preset='fast')",
            ctreg_methods.preset("fast"),
            setup=ctreg_methods.setup,
        ),
        Method(
            "ctreg-default",
            "ctreg",
            "ctreg.register(preset='default')",
            ctreg_methods.preset("default"),
            setup=ctreg_methods.setup,
        ),
        Method(
            "ctreg-accurate",
            "ctreg",
            "ctreg.register(preset='accurate')",
            ctreg_methods.preset("accurate"),
            setup=ctreg_methods.setup,
        ),
        Method(
            "sitk-affine",
            "simpleitk",
            "SimpleITK affine (mean squares, regular-step gradient descent, 3 levels)",
            sitk_methods.affine_only,
            _needs("SimpleITK"),
        ),
        Method(
            "sitk-affine+fsf-demons",
            "simpleitk",
            "SimpleITK affine + multi-resolution FastSymmetricForcesDemonsRegistrationFilter",
            sitk_methods.affine_fast_symmetric_demons,
            _needs("SimpleITK"),
        ),
        Method(
            "sitk-affine+diffeo-demons",
            "simpleitk",
            "SimpleITK affine + multi-resolution DiffeomorphicDemonsRegistrationFilter",
            sitk_methods.affine_diffeomorphic_demons,
            _needs("SimpleITK"),
        ),
        Method(
            "sitk-affine+bspline",
            "simpleitk",
            "SimpleITK affine + B-spline ImageRegistrationMethod (mean squares, LBFGSB, 3 levels)",
            sitk_methods.affine_bspline,
            _needs("SimpleITK"),
        ),
        Method(
            "elastix-affine+bspline",
            "other",
            "itk-elastix default affine + B-spline parameter maps",
            other_methods.elastix,
            _needs("itk"),
        ),
        Method(
            "ants-syn",
            "other",
            "ANTsPy SyN (type_of_transform='SyN')",
            other_methods.ants_syn,
            _needs("ants"),
        ),
        Method(
            "dipy-syn",
            "other",
            "DIPY affine + SymmetricDiffeomorphicRegistration (CC)",
            other_methods.dipy_syn,
            _needs("dipy"),
        ),
    ]
}
