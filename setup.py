"""Builds only the native extension ctreg._native (everything else is in pyproject.toml)."""
import glob
import os
import sys

import numpy
from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("CTREG_BUILD_JOBS", default=0).install()

here = os.path.dirname(os.path.abspath(__file__))
sources = sorted(
    os.path.relpath(p, here)
    for p in glob.glob(os.path.join(here, "cpp", "src", "*.cpp"))
    + glob.glob(os.path.join(here, "cpp", "bindings", "*.cpp"))
)

if sys.platform == "darwin":
    openmp_compile, openmp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
elif sys.platform == "win32":
    openmp_compile, openmp_link = ["/openmp"], []
else:
    openmp_compile, openmp_link = ["-fopenmp"], ["-fopenmp"]
optimise = ["-O3", "-fno-math-errno"] if sys.platform != "win32" else ["/O2"]

ext = Pybind11Extension(
    "ctreg._native",
    sources,
    # numpy: the array cache (cpp/bindings/bind_memory.cpp) is a NumPy memory handler
    include_dirs=[os.path.join("cpp", "include"), numpy.get_include()],
    cxx_std=17,
    extra_compile_args=optimise + openmp_compile,
    extra_link_args=openmp_link,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
