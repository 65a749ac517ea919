// Pointwise field kernels (ctreg/fields.hpp): scale, affine map, inverse step, Jacobian stats.
#include <algorithm>
#include <array>
#include <optional>

#include <pybind11/stl.h>

#include "common.hpp"
#include "ctreg/fields.hpp"

namespace ctreg::bind {

void bind_fields(py::module_& m) {
    m.def(
        "scale_field",
        [](const farray& v, double factor, std::optional<farray> out_arg) {
            const Shape3 s = field_shape(v, "field");
            farray out = out_arg ? *out_arg : farray({s.nz, s.ny, s.nx, index_t(3)});
            if (out_arg) same_shape(s, field_shape(out, "out"), "scale_field: field and out");
            const float* p = v.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                scale_field(p, s, factor, o);
            }
            return out;
        },
        py::arg("field").noconvert(), py::arg("factor"), py::arg("out").noconvert() = py::none(),
        "factor * field (double product, float32 result) into out (may be field) or a new array; "
        "see ctreg/fields.hpp.");
    m.def(
        "affine_field",
        [](const farray& u, const darray& vec, const darray& idx, std::optional<farray> out_arg) {
            const Shape3 s = field_shape(u, "field");
            if (vec.ndim() != 2 || vec.shape(0) != 3 || vec.shape(1) != 3)
                throw py::value_error("vectors must be a 3x3 float64 matrix");
            if (idx.ndim() != 2 || idx.shape(0) != 3 || idx.shape(1) != 4)
                throw py::value_error("index_affine must be a 3x4 float64 matrix");
            farray out = out_arg ? *out_arg : farray({s.nz, s.ny, s.nx, index_t(3)});
            if (out_arg) same_shape(s, field_shape(out, "out"), "affine_field: field and out");
            const float* p = u.data();
            const double* a = vec.data();
            const double* b = idx.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                affine_field(p, s, a, b, o);
            }
            return out;
        },
        py::arg("field").noconvert(), py::arg("vectors").noconvert(), py::arg("index_affine").noconvert(),
        py::arg("out").noconvert() = py::none(),
        "vectors @ field + index_affine @ (k, j, i, 1) per voxel into out (may be field: each voxel "
        "reads its own vector before writing it) or a new array; see ctreg/fields.hpp.");
    m.def(
        "invert_step",
        [](const farray& u, const farray& v, const py::sequence& spacing, farray& out) {
            const Shape3 s = field_shape(u, "displacement");
            same_shape(s, field_shape(v, "v"), "invert_step: displacement and v");
            same_shape(s, field_shape(out, "out"), "invert_step: displacement and out");
            const Spacing3 sp = spacing3(spacing, "spacing");
            const float* pu = u.data();
            const float* pv = v.data();
            float* po = out.mutable_data();
            if (po == pu || po == pv) throw py::value_error("invert_step: out must not alias its inputs");
            py::gil_scoped_release release;
            return invert_step(pu, pv, s, sp, po);
        },
        py::arg("displacement").noconvert(), py::arg("v").noconvert(), py::arg("spacing"),
        py::arg("out").noconvert(),
        "out = -u(p + v(p)) in place; returns the largest change in mm; see ctreg/fields.hpp.");
    m.def(
        "jacobian_stats",
        [](const farray& jac, const std::optional<u8array>& mask) {
            const Shape3 s = shape3(jac, "jacobian");
            const std::uint8_t* mk = nullptr;
            if (mask) {
                same_shape(s, shape3(*mask, "mask"), "jacobian_stats: jacobian and mask");
                mk = mask->data();
            }
            std::array<double, 7> r{};
            const float* p = jac.data();
            {
                py::gil_scoped_release release;
                jacobian_stats(p, s, mk, r.data());
            }
            return py::make_tuple(r[0], r[1], r[2], r[3], r[4], r[5], r[6]);
        },
        py::arg("jacobian").noconvert(), py::arg("mask").noconvert() = py::none(),
        "(count, min, max, count<=0, count>0, sum log J, sum log^2 J); see ctreg/fields.hpp.");
    m.def(
        "jacobian_stats_pair",
        [](const farray& jac, const u8array& mask, std::optional<darray> acc) {
            const Shape3 s = shape3(jac, "jacobian");
            same_shape(s, shape3(mask, "mask"), "jacobian_stats_pair: jacobian and mask");
            std::array<double, 14> r{};
            double* out = r.data();
            if (acc) {
                if (acc->size() != 14) throw py::value_error("acc must hold 14 float64 values");
                out = acc->mutable_data();
            }
            const float* p = jac.data();
            const std::uint8_t* mk = mask.data();
            {
                py::gil_scoped_release release;
                jacobian_stats_pair(p, s, mk, out, acc.has_value());
            }
            if (acc) std::copy(out, out + 14, r.begin());
            py::tuple t(14);
            for (int c = 0; c < 14; ++c) t[c] = r[c];
            return t;
        },
        py::arg("jacobian").noconvert(), py::arg("mask").noconvert(),
        py::arg("acc").noconvert() = py::none(),
        "jacobian_stats without and with the mask, one pass: a tuple of 14.  acc: a float64 "
        "array of 14 holding the sums so far, added onto in place (slabs of one map in z order).");
    m.def(
        "clip_fill",
        [](const farray& image, const std::optional<u8array>& valid, float lo, float hi, float fill) {
            const Shape3 s = shape3(image, "image");
            const std::uint8_t* v = nullptr;
            if (valid) {
                same_shape(s, shape3(*valid, "valid"), "clip_fill: image and valid");
                v = valid->data();
            }
            farray out({s.nz, s.ny, s.nx});
            const float* p = image.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                clip_fill(p, s, v, lo, hi, fill, o);
            }
            return out;
        },
        py::arg("image").noconvert(), py::arg("valid").noconvert(), py::arg("lo"), py::arg("hi"),
        py::arg("fill"),
        "valid ? clip(image, lo, hi) : fill, a new float32 array (NaN stays NaN); see ctreg/fields.hpp.");
}

}  // namespace ctreg::bind
