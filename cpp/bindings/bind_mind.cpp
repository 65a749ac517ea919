#include <pybind11/stl.h>

#include <optional>

#include "common.hpp"
#include "ctreg/mind.hpp"

namespace ctreg::bind {

using i32array = py::array_t<std::int32_t, py::array::c_style>;

void bind_mind(py::module_& m) {
    m.def(
        "mind_ssc",
        [](const farray& image, int radius, int distance, std::optional<farray> out) {
            const Shape3 s = shape3(image, "image");
            if (s.size() == 0) throw py::value_error("image must not be empty");
            if (radius < 0 || distance < 1) throw py::value_error("radius must be >= 0 and distance >= 1");
            farray o;
            if (out) {
                if (out->ndim() != 4 || out->shape(0) != s.nz || out->shape(1) != s.ny ||
                    out->shape(2) != s.nx || out->shape(3) != kMindChannels)
                    throw py::value_error("out must be a (z, y, x, 12) float32 array");
                o = *out;
            } else {
                o = farray({s.nz, s.ny, s.nx, index_t(kMindChannels)});
            }
            const float* src = image.data();
            float* dst = o.mutable_data();
            {
                py::gil_scoped_release nogil;
                mind_ssc(src, s, radius, distance, dst);
            }
            return o;
        },
        py::arg("image").noconvert(), py::arg("radius"), py::arg("distance"),
        py::arg("out").noconvert() = py::none(), "MIND-SSC descriptors; see ctreg.mind.mind_ssc.");
    m.def("mind_pairs", []() {
        py::list l;
        for (int c = 0; c < kMindChannels; ++c) {
            int a[3], b[3];
            mind_pair(c, a, b);
            l.append(py::make_tuple(py::make_tuple(a[0], a[1], a[2]), py::make_tuple(b[0], b[1], b[2])));
        }
        return l;
    });
    m.def(
        "block_match_cost",
        [](const farray& ref, const farray& flt, int grid_step, int block_radius, int block_step,
           int search_radius, int search_step, const std::optional<u8array>& mask) {
            if (ref.ndim() != 4 || flt.ndim() != 4) throw py::value_error("features must be (z, y, x, C)");
            for (int t = 0; t < 4; ++t)
                if (ref.shape(t) != flt.shape(t)) throw py::value_error("ref_feat and flt_feat shapes differ");
            BlockMatchArgs a;
            a.shape = Shape3{ref.shape(0), ref.shape(1), ref.shape(2)};
            a.channels = int(ref.shape(3));
            if (a.shape.size() == 0 || a.channels < 1) throw py::value_error("features must not be empty");
            if (grid_step < 1 || block_radius < 0 || block_step < 1 || search_radius < 0 || search_step < 1)
                throw py::value_error("bad block-matching parameters");
            a.grid_step = grid_step;
            a.block_radius = block_radius;
            a.block_step = block_step;
            a.search_radius = search_radius;
            a.search_step = search_step;
            if (mask) {
                same_shape(a.shape, shape3(*mask, "mask"), "features and mask");
                a.mask = mask->data();
            }
            a.grid = Shape3{(a.shape.nz + grid_step - 1) / grid_step, (a.shape.ny + grid_step - 1) / grid_step,
                            (a.shape.nx + grid_step - 1) / grid_step};
            const index_t K = search_radius / search_step, Ls = 2 * K + 1, L = Ls * Ls * Ls;
            farray cost({a.grid.nz, a.grid.ny, a.grid.nx, L});
            u8array active({a.grid.nz, a.grid.ny, a.grid.nx});
            a.ref = ref.data();
            a.flt = flt.data();
            a.cost = cost.mutable_data();
            a.active = active.mutable_data();
            {
                py::gil_scoped_release nogil;
                block_match_cost(a);
            }
            return py::make_tuple(cost, active);
        },
        py::arg("ref").noconvert(), py::arg("flt").noconvert(), py::arg("grid_step"), py::arg("block_radius"),
        py::arg("block_step"), py::arg("search_radius"), py::arg("search_step"),
        py::arg("mask").noconvert() = py::none());
    m.def(
        "coupled_argmin",
        [](const farray& cost, const farray& disp, const farray& v, float theta) {
            if (cost.ndim() != 2 || disp.ndim() != 2 || disp.shape(1) != 3 || disp.shape(0) != cost.shape(1) ||
                v.ndim() != 2 || v.shape(1) != 3 || v.shape(0) != cost.shape(0) || cost.shape(1) < 1)
                throw py::value_error("coupled_argmin: cost (n, L), disp (L, 3), v (n, 3)");
            const index_t n = cost.shape(0), L = cost.shape(1);
            i32array idx({n});
            farray u({n, index_t(3)});
            const float* c = cost.data();
            const float* d = disp.data();
            const float* vv = v.data();
            std::int32_t* ip = idx.mutable_data();
            float* up = u.mutable_data();
            {
                py::gil_scoped_release nogil;
                coupled_argmin(c, n, L, d, vv, theta, ip, up);
            }
            return py::make_tuple(idx, u);
        },
        py::arg("cost").noconvert(), py::arg("disp").noconvert(), py::arg("v").noconvert(), py::arg("theta"));
}

}  // namespace ctreg::bind
