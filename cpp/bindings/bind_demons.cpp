#include "common.hpp"
#include "ctreg/demons.hpp"

#include <pybind11/stl.h>

#include <optional>

namespace ctreg::bind {

void bind_demons(py::module_& m) {
    m.def(
        "demons_forces",
        [](const farray& reference, const farray& warped, const farray& grad_r,
           const std::optional<farray>& grad_w, const std::optional<u8array>& mask,
           const py::sequence& spacing, bool symmetric, double norm_mm2, double max_step_mm,
           double eps) {
            const Shape3 s = shape3(reference, "reference");
            same_shape(s, shape3(warped, "warped"), "reference and warped");
            same_shape(s, field_shape(grad_r, "reference_gradient"), "reference and reference_gradient");
            if (grad_w) same_shape(s, field_shape(*grad_w, "warped_gradient"), "reference and warped_gradient");
            if (mask) same_shape(s, shape3(*mask, "mask"), "reference and mask");
            const Spacing3 sp = spacing3(spacing, "spacing");
            farray out({s.nz, s.ny, s.nx, index_t(3)});
            const float* r = reference.data();
            const float* w = warped.data();
            const float* gr = grad_r.data();
            const float* gw = grad_w ? grad_w->data() : nullptr;
            const std::uint8_t* mk = mask ? mask->data() : nullptr;
            float* o = out.mutable_data();
            double total;
            index_t count = 0;
            {
                py::gil_scoped_release release;
                total = demons_forces(r, w, gr, gw, mk, s, sp, symmetric, norm_mm2, max_step_mm, eps,
                                      o, &count);
            }
            return py::make_tuple(out, total, count);
        },
        py::arg("reference").noconvert(), py::arg("warped").noconvert(),
        py::arg("reference_gradient").noconvert(), py::arg("warped_gradient").noconvert(),
        py::arg("mask").noconvert(), py::arg("spacing"), py::arg("symmetric"), py::arg("norm_mm2"),
        py::arg("max_step_mm"), py::arg("eps"),
        "Demons update field -> (du, sum of diff^2, mask voxels); see ctreg/demons.hpp.");
    m.def(
        "max_norm_vox",
        [](const farray& v, const py::sequence& spacing) {
            const Shape3 s = field_shape(v, "velocity");
            const Spacing3 sp = spacing3(spacing, "spacing");
            const float* p = v.data();
            py::gil_scoped_release release;
            return max_norm_vox(p, s, sp);
        },
        py::arg("velocity").noconvert(), py::arg("spacing"),
        "max |v| in voxels over a (z,y,x,3) field (NaN if any NaN); see ctreg/demons.hpp.");
    m.def(
        "jacobian_determinant",
        [](const farray& u, const py::sequence& spacing) {
            const Shape3 s = field_shape(u, "displacement");
            const Spacing3 sp = spacing3(spacing, "spacing");
            farray out({s.nz, s.ny, s.nx});
            const float* p = u.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                jacobian_determinant(p, s, sp, o);
            }
            return out;
        },
        py::arg("displacement").noconvert(), py::arg("spacing"),
        "det(I + grad u) of a (z,y,x,3) field in mm; see ctreg/demons.hpp.");
}

}  // namespace ctreg::bind
