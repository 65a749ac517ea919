#include "common.hpp"

PYBIND11_MODULE(_native, m) {
    m.doc() = "ctreg native kernels (C++17, OpenMP). Import through ctreg.ops, not directly.";
    ctreg::bind::bind_threads(m);
    ctreg::bind::bind_memory(m);
    ctreg::bind::bind_warp(m);
    ctreg::bind::bind_gradient(m);
    ctreg::bind::bind_smooth(m);
    ctreg::bind::bind_bspline(m);
    ctreg::bind::bind_metrics(m);
    ctreg::bind::bind_demons(m);
    ctreg::bind::bind_fields(m);
    ctreg::bind::bind_mind(m);
    ctreg::bind::bind_prep(m);
}
