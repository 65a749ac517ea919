#include <pybind11/stl.h>

#include <optional>

#include "common.hpp"
#include "ctreg/metrics.hpp"

namespace ctreg::bind {
namespace {

using opt_mask = std::optional<u8array>;
using opt_field = std::optional<farray>;

// Checks the arguments, allocates the output, runs `kernel(args)` without the GIL.
template <class Kernel>
py::tuple run_metric(const farray& reference, const farray& warped, const opt_mask& mask,
                     const opt_field& warped_gradient, Kernel&& kernel) {
    MetricArgs a;
    a.shape = shape3(reference, "reference");
    same_shape(a.shape, shape3(warped, "warped"), "reference and warped");
    a.reference = reference.data();
    a.warped = warped.data();
    if (mask) {
        same_shape(a.shape, shape3(*mask, "mask"), "reference and mask");
        a.mask = mask->data();
    }
    farray out;
    if (warped_gradient) {
        same_shape(a.shape, field_shape(*warped_gradient, "warped_gradient"), "reference and warped_gradient");
        a.warped_gradient = warped_gradient->data();
        out = farray({a.shape.nz, a.shape.ny, a.shape.nx, index_t(3)});
    } else {
        out = farray({a.shape.nz, a.shape.ny, a.shape.nx});
    }
    a.out = out.mutable_data();
    double value;
    {
        py::gil_scoped_release nogil;
        value = kernel(a);
    }
    return py::make_tuple(value, out);
}

}  // namespace

void bind_metrics(py::module_& m) {
    m.def(
        "metric_ssd",
        [](const farray& r, const farray& w, const opt_mask& mask, const opt_field& wg) {
            return run_metric(r, w, mask, wg, [](const MetricArgs& a) { return ssd(a); });
        },
        py::arg("reference").noconvert(), py::arg("warped").noconvert(), py::arg("mask").noconvert() = py::none(),
        py::arg("warped_gradient").noconvert() = py::none());
    m.def(
        "metric_ncc",
        [](const farray& r, const farray& w, const opt_mask& mask, const opt_field& wg) {
            return run_metric(r, w, mask, wg, [](const MetricArgs& a) { return ncc(a); });
        },
        py::arg("reference").noconvert(), py::arg("warped").noconvert(), py::arg("mask").noconvert() = py::none(),
        py::arg("warped_gradient").noconvert() = py::none());
    m.def(
        "metric_lncc",
        [](const farray& r, const farray& w, const py::sequence& radius_vox, const opt_mask& mask,
           const opt_field& wg) {
            if (py::len(radius_vox) != 3) throw py::value_error("radius_vox must be three integers (z, y, x) >= 0");
            const int rz = radius_vox[0].cast<int>(), ry = radius_vox[1].cast<int>(), rx = radius_vox[2].cast<int>();
            if (rz < 0 || ry < 0 || rx < 0) throw py::value_error("radius_vox must be three integers (z, y, x) >= 0");
            return run_metric(r, w, mask, wg, [=](const MetricArgs& a) { return lncc(a, rz, ry, rx); });
        },
        py::arg("reference").noconvert(), py::arg("warped").noconvert(), py::arg("radius_vox"),
        py::arg("mask").noconvert() = py::none(), py::arg("warped_gradient").noconvert() = py::none());
    m.def(
        "metric_mattes_mi",
        [](const farray& r, const farray& w, int bins, double r0, double r1, double w0, double w1,
           const opt_mask& mask, const opt_field& wg) {
            if (bins < 5) throw py::value_error("bins must be an integer >= 5");
            if (!(r1 > r0) || !(w1 > w0)) throw py::value_error("ref_range and warped_range must be (min, max) with max > min");
            return run_metric(r, w, mask, wg,
                              [=](const MetricArgs& a) { return mattes_mi(a, bins, r0, r1, w0, w1); });
        },
        py::arg("reference").noconvert(), py::arg("warped").noconvert(), py::arg("bins"), py::arg("ref_min"),
        py::arg("ref_max"), py::arg("warped_min"), py::arg("warped_max"), py::arg("mask").noconvert() = py::none(),
        py::arg("warped_gradient").noconvert() = py::none());
}

}  // namespace ctreg::bind
