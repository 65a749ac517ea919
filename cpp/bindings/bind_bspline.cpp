#include "common.hpp"
#include "ctreg/bspline.hpp"

namespace ctreg::bind {
namespace {

Int3 control_spacing(const py::sequence& s) {
    if (py::len(s) != 3) throw py::value_error("spacing_vox must be three integers (tz, ty, tx) >= 1");
    Int3 t{s[0].cast<index_t>(), s[1].cast<index_t>(), s[2].cast<index_t>()};
    if (t.z < 1 || t.y < 1 || t.x < 1) throw py::value_error("spacing_vox must be three integers (tz, ty, tx) >= 1");
    return t;
}

py::tuple to_tuple(const Shape3& s) { return py::make_tuple(s.nz, s.ny, s.nx); }

Shape3 shape_of(const py::sequence& s, const char* name) {
    if (py::len(s) != 3) throw py::value_error(std::string(name) + " must be a (z, y, x) shape");
    Shape3 r{s[0].cast<index_t>(), s[1].cast<index_t>(), s[2].cast<index_t>()};
    if (r.nz < 1 || r.ny < 1 || r.nx < 1) throw py::value_error(std::string(name) + " must be positive");
    return r;
}

void require_grid(const Shape3& grid, const Shape3& need, const char* name) {
    if (grid.nz < need.nz || grid.ny < need.ny || grid.nx < need.nx)
        throw py::value_error(std::string(name) + " is smaller than bspline_grid_shape(shape, spacing_vox)");
}

}  // namespace

void bind_bspline(py::module_& m) {
    m.def(
        "bspline_grid_shape",
        [](const py::sequence& shape, const py::sequence& spacing_vox) {
            return to_tuple(bspline_grid_shape(shape_of(shape, "shape"), control_spacing(spacing_vox)));
        },
        py::arg("shape"), py::arg("spacing_vox"));

    m.def(
        "bspline_to_dense",
        [](const farray& coeffs, const py::sequence& spacing_vox, const py::sequence& out_shape) {
            const Shape3 grid = field_shape(coeffs, "coeffs");
            const Int3 t = control_spacing(spacing_vox);
            const Shape3 dense = shape_of(out_shape, "out_shape");
            require_grid(grid, bspline_grid_shape(dense, t), "coeffs");
            farray out({dense.nz, dense.ny, dense.nx, index_t(3)});
            const float* c = coeffs.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                bspline_to_dense(c, grid, t, o, dense);
            }
            return out;
        },
        py::arg("coeffs").noconvert(), py::arg("spacing_vox"), py::arg("out_shape"));

    m.def(
        "bspline_adjoint",
        [](const farray& field, const py::sequence& spacing_vox, const py::sequence& grid_shape) {
            const Shape3 dense = field_shape(field, "dense");
            const Int3 t = control_spacing(spacing_vox);
            const Shape3 grid = shape_of(grid_shape, "grid_shape");
            require_grid(grid, bspline_grid_shape(dense, t), "grid_shape");
            farray out({grid.nz, grid.ny, grid.nx, index_t(3)});
            const float* f = field.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release nogil;
                bspline_adjoint(f, dense, t, o, grid);
            }
            return out;
        },
        py::arg("dense").noconvert(), py::arg("spacing_vox"), py::arg("grid_shape"));

    m.def(
        "bending_energy",
        [](const farray& coeffs, const py::sequence& spacing_vox, const py::sequence& voxel_spacing_mm) {
            const Shape3 grid = field_shape(coeffs, "coeffs");
            if (grid.nz < 4 || grid.ny < 4 || grid.nx < 4)
                throw py::value_error("coeffs must have at least 4 control points per axis");
            const Int3 t = control_spacing(spacing_vox);
            const Spacing3 sp = spacing3(voxel_spacing_mm, "voxel_spacing_mm");
            farray grad({grid.nz, grid.ny, grid.nx, index_t(3)});
            const float* c = coeffs.data();
            float* g = grad.mutable_data();
            double e;
            {
                py::gil_scoped_release nogil;
                e = bending_energy(c, grid, t, sp, g);
            }
            return py::make_tuple(e, grad);
        },
        py::arg("coeffs").noconvert(), py::arg("spacing_vox"), py::arg("voxel_spacing_mm"));
}

}  // namespace ctreg::bind
