#include "common.hpp"
#include "ctreg/gradient.hpp"

namespace ctreg::bind {

void bind_gradient(py::module_& m) {
    m.def(
        "gradient",
        [](const farray& image, const py::sequence& spacing) {
            const Shape3 s = shape3(image, "image");
            const Spacing3 sp = spacing3(spacing, "spacing");
            farray out({s.nz, s.ny, s.nx, index_t(3)});
            const float* src = image.data();
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                gradient(src, s, sp, dst);
            }
            return out;
        },
        py::arg("image").noconvert(), py::arg("spacing"),
        "(z,y,x,3) float32 gradient (d/dz, d/dy, d/dx) per mm; np.gradient(edge_order=1).");
}

}  // namespace ctreg::bind
