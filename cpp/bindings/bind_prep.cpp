// Bindings of the full-resolution slab kernel (ctreg/fullres.hpp), the mask kernels
// (ctreg/morph.hpp) and transform.h5's field chunks (ctreg/itk_field.hpp).
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "common.hpp"
#include "ctreg/fullres.hpp"
#include "ctreg/itk_field.hpp"
#include "ctreg/morph.hpp"

namespace ctreg::bind {

namespace {
template <class A>
void need(const A& a, py::ssize_t count, const char* name) {
    if (a.size() < count) throw py::value_error(std::string(name) + " is too small");
}
}  // namespace

void bind_prep(py::module_& m) {
    m.def(
        "fullres_slab",
        [](const farray& u, const std::vector<double>& step, const std::vector<double>& first,
           const std::vector<index_t>& rows, const py::sequence& spacing, const farray& source,
           const darray& out_to_frame, const darray& to_index, float sentinel, float invalid_below,
           float fill_hu, float det_a, const darray& vec, const darray& idx, farray& uh, farray& jh,
           farray& warped, u8array& valid, farray& displacement, farray& jacobian,
           index_t jacobian_first) {
            FullresSlab a;
            a.u = u.data();
            a.fs = field_shape(u, "u");
            if (step.size() != 3 || first.size() != 3 || rows.size() != 4)
                throw py::value_error("step, first: (z, y, x); rows: (h0, h1, k0, k1)");
            for (int i = 0; i < 3; ++i) {
                a.step[i] = step[i];
                a.first[i] = first[i];
            }
            const Shape3 out = shape3(warped, "warped");
            same_shape(out, shape3(valid, "valid"), "warped and valid");
            same_shape(out, field_shape(displacement, "displacement"), "warped and displacement");
            a.h0 = rows[0]; a.h1 = rows[1]; a.k0 = rows[2]; a.k1 = rows[3];
            if (!(0 <= a.h0 && a.h0 <= a.k0 && a.k0 < a.k1 && a.k1 <= a.h1 && a.h1 <= out.nz))
                throw py::value_error("rows must satisfy 0 <= h0 <= k0 < k1 <= h1 <= nz");
            a.ny = out.ny;
            a.nx = out.nx;
            const Shape3 js = shape3(jacobian, "jacobian");
            if (js.ny != out.ny || js.nx != out.nx || !(0 <= jacobian_first && jacobian_first <= a.k0) ||
                js.nz < a.k1 - jacobian_first)
                throw py::value_error("jacobian must hold grid slices [jacobian_first, k1) of (ny, nx)");
            a.jacobian_first = jacobian_first;
            a.spacing = spacing3(spacing, "spacing");
            a.source = source.data();
            a.source_shape = shape3(source, "source");
            if (a.source_shape.size() >= (index_t(1) << 31)) throw py::value_error("source too large");
            a.out_to_frame = mat4(out_to_frame, "out_to_frame");
            a.to_index = mat4(to_index, "to_index");
            a.sentinel = sentinel; a.invalid_below = invalid_below; a.fill_hu = fill_hu; a.det_a = det_a;
            if (vec.size() != 9 || idx.size() != 12) throw py::value_error("vec 3x3, idx 3x4");
            std::memcpy(a.vec, vec.data(), sizeof(a.vec));
            std::memcpy(a.idx, idx.data(), sizeof(a.idx));
            const py::ssize_t halo = (a.h1 - a.h0) * a.ny * a.nx;
            need(uh, 3 * halo, "uh");
            need(jh, halo, "jh");
            a.uh = uh.mutable_data();
            a.jh = jh.mutable_data();
            a.warped = warped.mutable_data();
            a.valid = valid.mutable_data();
            a.displacement = displacement.mutable_data();
            a.jacobian = jacobian.mutable_data();
            {
                py::gil_scoped_release release;
                fullres_slab(a);
            }
        },
        py::arg("u").noconvert(), py::arg("step"), py::arg("first"), py::arg("rows"), py::arg("spacing"),
        py::arg("source").noconvert(), py::arg("out_to_frame").noconvert(), py::arg("to_index").noconvert(),
        py::arg("sentinel"), py::arg("invalid_below"), py::arg("fill_hu"), py::arg("det_a"),
        py::arg("vec").noconvert(), py::arg("idx").noconvert(), py::arg("uh").noconvert(),
        py::arg("jh").noconvert(), py::arg("warped").noconvert(), py::arg("valid").noconvert(),
        py::arg("displacement").noconvert(), py::arg("jacobian").noconvert(),
        py::arg("jacobian_first") = 0,
        "One z slab of register()'s full-resolution step into the outputs (see ctreg/fullres.hpp).");
    m.def(
        "dilate_rows",
        [](const u8array& mask, const py::array_t<int, py::array::c_style>& reach) {
            const Shape3 s = shape3(mask, "mask");
            if (reach.ndim() != 2 || reach.shape(0) % 2 != 1 || reach.shape(1) % 2 != 1)
                throw py::value_error("reach must be 2-D of odd sizes (2 rz + 1, 2 ry + 1)");
            const int* w = reach.data();
            for (py::ssize_t q = 0; q < reach.size(); ++q)
                if (w[q] >= 255) throw py::value_error("every reach must be < 255");
            u8array out({s.nz, s.ny, s.nx});
            const std::uint8_t* p = mask.data();
            std::uint8_t* o = out.mutable_data();
            const index_t rz = reach.shape(0) / 2, ry = reach.shape(1) / 2;
            {
                py::gil_scoped_release release;
                dilate_rows(p, s, w, rz, ry, o);
            }
            return out;
        },
        py::arg("mask").noconvert(), py::arg("reach").noconvert(),
        "Dilation of a uint8 (z, y, x) mask by the offsets |dx| <= reach[dz + rz, dy + ry] (see "
        "ctreg/morph.hpp); a new uint8 array of 0 / 1.");
    m.def(
        "itk_field_chunk",
        [](const farray& u, const farray& b, const farray& start, const farray& along, index_t size) {
            if (u.ndim() != 3 || u.shape(2) != 3) throw py::value_error("u must be (rows, nx, 3)");
            const index_t nrows = u.shape(0), nx = u.shape(1);
            if (b.size() != 9 || start.size() != 3 * nrows || along.size() != 3 * nx || size < 3 * nrows * nx)
                throw py::value_error("b (3, 3), start (rows, 3), along (nx, 3), size >= rows * nx * 3");
            u8array out({static_cast<py::ssize_t>(4 * size)});
            const float* pu = u.data();
            const float* pb = b.data();
            const float* ps = start.data();
            const float* pa = along.data();
            std::uint8_t* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                itk_field_chunk(pu, nrows, nx, pb, ps, pa, size, o);
            }
            return out;
        },
        py::arg("u").noconvert(), py::arg("b").noconvert(), py::arg("start").noconvert(),
        py::arg("along").noconvert(), py::arg("size"),
        "One byte-shuffled chunk of transform.h5's field (see ctreg/itk_field.hpp).");
}

}  // namespace ctreg::bind
