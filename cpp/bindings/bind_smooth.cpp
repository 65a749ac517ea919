#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "common.hpp"
#include "ctreg/smooth.hpp"
#include "ctreg/prep.hpp"

namespace ctreg::bind {

namespace {
// Element strides (z, y) of a 3-D view with contiguous rows (a crop of a C-contiguous array).
void view_strides(const py::array& a, std::size_t item, const char* name, index_t& sz, index_t& sy) {
    if (a.ndim() != 3 || a.strides(2) != py::ssize_t(item) || a.strides(0) % py::ssize_t(item) ||
        a.strides(1) % py::ssize_t(item) || a.strides(0) < 0 || a.strides(1) < 0)
        throw py::type_error(std::string(name) + " must be a 3-D view with contiguous rows");
    sz = a.strides(0) / py::ssize_t(item);
    sy = a.strides(1) / py::ssize_t(item);
}

// smooth_subsample's lattice arguments, checked.
void lattice_args(const py::sequence& sigma_vox, double truncate, const py::sequence& factors, double sig[3],
                  index_t f[3]) {
    if (py::len(sigma_vox) != 3 || py::len(factors) != 3)
        throw py::value_error("sigma_vox and factors must be (z, y, x)");
    for (int a = 0; a < 3; ++a) {
        sig[a] = sigma_vox[a].cast<double>();
        f[a] = factors[a].cast<index_t>();
        if (!(sig[a] >= 0.0) || !std::isfinite(sig[a])) throw py::value_error("sigma_vox must be finite and >= 0");
        if (f[a] < 1) throw py::value_error("factors must be >= 1");
    }
    if (!(truncate > 0.0) || !std::isfinite(truncate)) throw py::value_error("truncate must be finite and > 0");
}
}  // namespace

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
    m.def(
        "smooth_subsample",
        [](const farray& array, const py::sequence& sigma_vox, double truncate, const py::sequence& factors) {
            const Shape3 s = shape3(array, "array");
            double sig[3];
            index_t f[3];
            lattice_args(sigma_vox, truncate, factors, sig, f);
            farray out({(s.nz + f[0] - 1) / f[0], (s.ny + f[1] - 1) / f[1], (s.nx + f[2] - 1) / f[2]});
            const float* src = array.data();
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                smooth_subsample(src, s, sig, truncate, f, dst);
            }
            return out;
        },
        py::arg("array").noconvert(), py::arg("sigma_vox"), py::arg("truncate"), py::arg("factors"),
        "smooth(array)[::fz, ::fy, ::fx] of a scalar (z,y,x) float32 image, bit-identical, computed "
        "only on the kept lattice.");
    m.def(
        "clip_fill_view",
        [](const py::array_t<float>& image, const std::optional<py::array_t<std::uint8_t>>& valid, float lo,
           float hi, float fill) {
            const Shape3 s = shape3(image, "image");
            index_t isz, isy, vsz = 0, vsy = 0;
            view_strides(image, sizeof(float), "image", isz, isy);
            const std::uint8_t* v = nullptr;
            if (valid) {
                same_shape(s, shape3(*valid, "valid"), "clip_fill_view: image and valid");
                view_strides(*valid, 1, "valid", vsz, vsy);
                v = valid->data();
            }
            farray out({s.nz, s.ny, s.nx});
            const float* p = image.data();
            float* o = out.mutable_data();
            {
                py::gil_scoped_release release;
                clip_fill_view(p, isz, isy, v, vsz, vsy, s, lo, hi, fill, o);
            }
            return out;
        },
        py::arg("image").noconvert(), py::arg("valid").noconvert(), py::arg("lo"), py::arg("hi"),
        py::arg("fill"),
        "valid ? clip(image, lo, hi) : fill into a new contiguous float32 array, from a 3-D view "
        "with contiguous rows (a crop).");
    m.def(
        "smooth_subsample_source",
        [](const std::optional<py::array_t<float>>& image, const std::optional<py::array_t<std::uint8_t>>& valid,
           const std::optional<py::array_t<std::uint8_t>>& mask, const py::sequence& shape, float lo, float hi,
           float fill, float inside, float outside, const py::sequence& sigma_vox, double truncate,
           const py::sequence& factors) {
            if (py::len(shape) != 3) throw py::value_error("shape must be (z, y, x)");
            const Shape3 s{shape[0].cast<index_t>(), shape[1].cast<index_t>(), shape[2].cast<index_t>()};
            if (s.nz < 1 || s.ny < 1 || s.nx < 1) throw py::value_error("shape must not be empty");
            double sig[3];
            index_t f[3];
            lattice_args(sigma_vox, truncate, factors, sig, f);
            SourceOp op;
            op.lo = lo;
            op.hi = hi;
            op.fill = fill;
            op.inside = inside;
            op.outside = outside;
            if (image) {
                same_shape(s, shape3(*image, "image"), "smooth_subsample_source: shape and image");
                view_strides(*image, sizeof(float), "image", op.isz, op.isy);
                op.image = image->data();
            }
            if (valid) {
                same_shape(s, shape3(*valid, "valid"), "smooth_subsample_source: shape and valid");
                view_strides(*valid, 1, "valid", op.vsz, op.vsy);
                op.valid = valid->data();
            }
            if (mask) {
                same_shape(s, shape3(*mask, "mask"), "smooth_subsample_source: shape and mask");
                view_strides(*mask, 1, "mask", op.msz, op.msy);
                op.mask = mask->data();
            }
            farray out({(s.nz + f[0] - 1) / f[0], (s.ny + f[1] - 1) / f[1], (s.nx + f[2] - 1) / f[2]});
            float* dst = out.mutable_data();
            {
                py::gil_scoped_release release;
                smooth_subsample_source(op, s, sig, truncate, f, dst);
            }
            return out;
        },
        py::arg("image").noconvert(), py::arg("valid").noconvert(), py::arg("mask").noconvert(), py::arg("shape"),
        py::arg("lo"), py::arg("hi"), py::arg("fill"), py::arg("inside"), py::arg("outside"), py::arg("sigma_vox"),
        py::arg("truncate"), py::arg("factors"),
        "smooth_subsample of mask && !mask ? outside : (image ? (valid && !valid ? fill : clip(image, lo, hi)) : "
        "inside), computed row by row from 3-D views with contiguous rows; bit-identical to storing that image "
        "and calling smooth_subsample.");
    m.def(
        "map_piecewise_linear",
        [](const py::array_t<float, py::array::c_style>& image, const darray& xp, const darray& fp, float above) {
            if (xp.ndim() != 1 || fp.ndim() != 1 || xp.size() != fp.size() || xp.size() < 2)
                throw py::value_error("xp and fp must be 1-D of the same length >= 2");
            const double* x = xp.data();
            for (py::ssize_t j = 0; j + 1 < xp.size(); ++j)
                if (!(x[j] < x[j + 1])) throw py::value_error("xp must be strictly increasing");
            py::array_t<float> out(std::vector<py::ssize_t>(image.shape(), image.shape() + image.ndim()));
            const float* p = image.data();
            float* o = out.mutable_data();
            const index_t n = image.size();
            {
                py::gil_scoped_release release;
                map_piecewise_linear(p, n, x, fp.data(), xp.size(), above, o);
            }
            return out;
        },
        py::arg("image").noconvert(), py::arg("xp").noconvert(), py::arg("fp").noconvert(), py::arg("above"),
        "where(image > above, interp(image, xp, fp), image) as float32, bit for bit as NumPy.");
}

}  // namespace ctreg::bind
