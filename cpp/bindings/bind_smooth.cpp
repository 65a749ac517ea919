#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "common.hpp"
#include "ctreg/smooth.hpp"

namespace ctreg::bind {

void bind_smooth(py::module_& m) {
    m.def(
        "smooth",
        [](const farray& array, const py::sequence& sigma_vox, double truncate,
           const std::optional<farray>& addend) {
            Shape3 s;
            int ncomp = 1;
            if (array.ndim() == 4) {
                s = field_shape(array, "array");
                ncomp = 3;
            } else {
                s = shape3(array, "array");
            }
            if (py::len(sigma_vox) != 3)
                throw py::value_error("sigma_vox must be (z, y, x) standard deviations in voxels");
            double sig[3];
            for (int a = 0; a < 3; ++a) {
                sig[a] = sigma_vox[a].cast<double>();
                if (!(sig[a] >= 0.0) || !std::isfinite(sig[a]))
                    throw py::value_error("sigma_vox must be finite and >= 0");
            }
            if (!(truncate > 0.0) || !std::isfinite(truncate))
                throw py::value_error("truncate must be finite and > 0");
            std::vector<py::ssize_t> shape(array.shape(), array.shape() + array.ndim());
            if (addend) {
                std::vector<py::ssize_t> ashape(addend->shape(), addend->shape() + addend->ndim());
                if (ashape != shape) throw py::value_error("addend must have the shape of array");
            }
            farray out(shape);
            const float* src = array.data();
            const float* add = addend ? addend->data() : nullptr;
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                smooth(src, s, ncomp, sig, truncate, dst, add);
            }
            return out;
        },
        py::arg("array").noconvert(), py::arg("sigma_vox"), py::arg("truncate"),
        py::arg("addend").noconvert() = py::none(),
        "Separable Gaussian (scipy.ndimage.gaussian_filter, mode='nearest'); scalar (z,y,x) or "
        "vector (z,y,x,3) array; sigma in voxels per axis (z, y, x); optional addend: smooths "
        "array + addend.");
}

}  // namespace ctreg::bind
