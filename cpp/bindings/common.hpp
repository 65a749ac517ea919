// Helpers shared by the bind_<topic>.cpp files (the only code that includes pybind11).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "ctreg/common.hpp"

namespace py = pybind11;

namespace ctreg::bind {

// Bind every float array argument with .noconvert(): a float64 or strided array raises
// TypeError instead of being copied silently.
using farray = py::array_t<float, py::array::c_style>;
using darray = py::array_t<double, py::array::c_style>;
using u8array = py::array_t<std::uint8_t, py::array::c_style>;

inline Shape3 shape3(const py::array& a, const char* name) {
    if (a.ndim() != 3)
        throw py::value_error(std::string(name) + " must be a 3-D (z, y, x) array, got ndim=" +
                              std::to_string(a.ndim()));
    return Shape3{a.shape(0), a.shape(1), a.shape(2)};
}

// A (z, y, x, 3) vector field.
inline Shape3 field_shape(const py::array& a, const char* name) {
    if (a.ndim() != 4 || a.shape(3) != 3)
        throw py::value_error(std::string(name) + " must be a (z, y, x, 3) vector field");
    return Shape3{a.shape(0), a.shape(1), a.shape(2)};
}

inline void same_shape(const Shape3& a, const Shape3& b, const char* what) {
    if (a.nz != b.nz || a.ny != b.ny || a.nx != b.nx)
        throw py::value_error(std::string(what) + ": shapes differ");
}

inline Mat4 mat4(const darray& a, const char* name) {
    if (a.ndim() != 2 || a.shape(0) != 4 || a.shape(1) != 4)
        throw py::value_error(std::string(name) + " must be a 4x4 float64 matrix");
    Mat4 m;
    auto r = a.unchecked<2>();
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) m.m[i][j] = r(i, j);
    return m;
}

inline Spacing3 spacing3(const py::sequence& s, const char* name) {
    if (py::len(s) != 3) throw py::value_error(std::string(name) + " must be (z, y, x) spacing in mm");
    Spacing3 sp{s[0].cast<double>(), s[1].cast<double>(), s[2].cast<double>()};
    if (!(sp.z > 0 && sp.y > 0 && sp.x > 0))
        throw py::value_error(std::string(name) + " must be positive");
    return sp;
}

void bind_threads(py::module_& m);
void bind_memory(py::module_& m);
void bind_warp(py::module_& m);
void bind_gradient(py::module_& m);
void bind_smooth(py::module_& m);
void bind_bspline(py::module_& m);
void bind_metrics(py::module_& m);
void bind_demons(py::module_& m);
void bind_fields(py::module_& m);
void bind_mind(py::module_& m);
void bind_prep(py::module_& m);

}  // namespace ctreg::bind
