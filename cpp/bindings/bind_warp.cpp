#include <optional>
#include <vector>

#include <pybind11/stl.h>

#include "common.hpp"
#include "ctreg/warp.hpp"

namespace ctreg::bind {
namespace {

Shape3 out_shape3(const std::vector<index_t>& v) {
    if (v.size() != 3 || v[0] < 1 || v[1] < 1 || v[2] < 1)
        throw py::value_error("out_shape must be three positive integers (z, y, x)");
    return Shape3{v[0], v[1], v[2]};
}

// The kernels address the image with 32-bit offsets.
void check_image_size(const Shape3& s) {
    if (s.size() >= (index_t(1) << 31))
        throw py::value_error("image must have fewer than 2**31 voxels, got " + std::to_string(s.size()));
}

void check_order(int order) {
    if (order != 0 && order != 1)
        throw py::value_error("order must be 0 (nearest) or 1 (trilinear), got " + std::to_string(order));
}

farray resample_affine_py(const farray& image, const darray& matrix,
                          const std::vector<index_t>& out_shape, int order, float fill) {
    const Shape3 in = shape3(image, "image");
    check_image_size(in);
    const Mat4 m = mat4(matrix, "matrix");
    const Shape3 os = out_shape3(out_shape);
    check_order(order);
    farray out({os.nz, os.ny, os.nx});
    const float* src = image.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        resample_affine(src, in, m, dst, os, order, fill);
    }
    return out;
}

farray resample_displacement_py(const farray& image, const farray& displacement,
                                const darray& out_to_world, const darray& world_to_image,
                                const std::optional<darray>& field_from_out,
                                const std::optional<std::vector<index_t>>& out_shape, int order,
                                float fill) {
    const Shape3 in = shape3(image, "image");
    check_image_size(in);
    const Shape3 fs = field_shape(displacement, "displacement");
    const Mat4 o2w = mat4(out_to_world, "out_to_world");
    const Mat4 w2i = mat4(world_to_image, "world_to_image");
    check_order(order);
    Shape3 os = fs;
    Mat4 f2o;
    const Mat4* fp = nullptr;
    if (field_from_out) {
        f2o = mat4(*field_from_out, "field_from_out");
        fp = &f2o;
        if (!out_shape) throw py::value_error("out_shape is required when field_from_out is given");
        os = out_shape3(*out_shape);
    } else if (out_shape) {
        os = out_shape3(*out_shape);
        same_shape(os, fs, "out_shape and displacement (without field_from_out the field lies on the output grid)");
    }
    farray out({os.nz, os.ny, os.nx});
    const float* src = image.data();
    const float* fld = displacement.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        resample_displacement(src, in, fld, fs, o2w, w2i, fp, dst, os, order, fill);
    }
    return out;
}

py::array_t<double> affine_moments_py(const farray& image, const farray& grad_z,
                                      const farray& grad_y, const farray& grad_x,
                                      const farray& reference, const std::optional<u8array>& mask,
                                      const darray& matrix, float valid_min) {
    const Shape3 in = shape3(image, "image");
    check_image_size(in);
    same_shape(in, shape3(grad_z, "grad_z"), "image and grad_z");
    same_shape(in, shape3(grad_y, "grad_y"), "image and grad_y");
    same_shape(in, shape3(grad_x, "grad_x"), "image and grad_x");
    const Shape3 os = shape3(reference, "reference");
    if (mask) same_shape(os, shape3(*mask, "mask"), "reference and mask");
    const Mat4 m = mat4(matrix, "matrix");
    py::array_t<double> out(kAffineMoments);
    const float* grad[3] = {grad_z.data(), grad_y.data(), grad_x.data()};
    const float* img = image.data();
    const float* ref = reference.data();
    const std::uint8_t* mk = mask ? mask->data() : nullptr;
    double* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        affine_moments(img, in, grad, ref, mk, os, m, valid_min, dst);
    }
    return out;
}

py::tuple warp_with_gradient_py(const farray& image, const farray& grad_z, const farray& grad_y,
                                const farray& grad_x, const std::optional<farray>& displacement,
                                const darray& out_to_world, const darray& world_to_image,
                                const std::vector<index_t>& out_shape, float fill,
                                float valid_min, float invalid_value) {
    const Shape3 in = shape3(image, "image");
    check_image_size(in);
    same_shape(in, shape3(grad_z, "grad_z"), "image and grad_z");
    same_shape(in, shape3(grad_y, "grad_y"), "image and grad_y");
    same_shape(in, shape3(grad_x, "grad_x"), "image and grad_x");
    const Shape3 os = out_shape3(out_shape);
    if (displacement) same_shape(os, field_shape(*displacement, "displacement"),
                                 "out_shape and displacement (the field lies on the output grid)");
    const Mat4 o2w = mat4(out_to_world, "out_to_world");
    const Mat4 w2i = mat4(world_to_image, "world_to_image");
    farray out({os.nz, os.ny, os.nx});
    u8array valid({os.nz, os.ny, os.nx});
    farray grad({os.nz, os.ny, os.nx, index_t(3)});
    const float* g[3] = {grad_z.data(), grad_y.data(), grad_x.data()};
    const float* img = image.data();
    const float* fld = displacement ? displacement->data() : nullptr;
    float* o = out.mutable_data();
    std::uint8_t* v = valid.mutable_data();
    float* go = grad.mutable_data();
    {
        py::gil_scoped_release release;
        warp_with_gradient(img, g, in, fld, o2w, w2i, fill, valid_min, invalid_value, o, v, go, os);
    }
    return py::make_tuple(out, valid, grad);
}

farray compose_fields_py(const farray& outer, const farray& inner, const py::sequence& spacing) {
    const Shape3 s = field_shape(outer, "outer");
    same_shape(s, field_shape(inner, "inner"), "outer and inner");
    check_image_size(s);
    const Spacing3 sp = spacing3(spacing, "spacing");
    farray out({s.nz, s.ny, s.nx, index_t(3)});
    const float* o = outer.data();
    const float* in = inner.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        compose_fields(o, in, s, sp, dst);
    }
    return out;
}

py::object resample_composed_py(const farray& image, const farray& inner, const farray& outer,
                                const py::sequence& spacing, const darray& out_to_world,
                                const darray& world_to_image, float fill,
                                const std::optional<float>& valid_min, float invalid_value) {
    const Shape3 in = shape3(image, "image");
    check_image_size(in);
    const Shape3 fs = field_shape(inner, "inner");
    same_shape(fs, field_shape(outer, "outer"), "inner and outer");
    check_image_size(fs);
    const Spacing3 sp = spacing3(spacing, "spacing");
    const Mat4 o2w = mat4(out_to_world, "out_to_world");
    const Mat4 w2i = mat4(world_to_image, "world_to_image");
    farray out({fs.nz, fs.ny, fs.nx});
    const float* src = image.data();
    const float* a = inner.data();
    const float* b = outer.data();
    float* dst = out.mutable_data();
    if (!valid_min) {
        py::gil_scoped_release release;
        resample_composed(src, in, a, b, fs, sp, o2w, w2i, dst, fill);
        return std::move(out);
    }
    u8array valid({fs.nz, fs.ny, fs.nx});
    std::uint8_t* vd = valid.mutable_data();
    {
        py::gil_scoped_release release;
        resample_composed(src, in, a, b, fs, sp, o2w, w2i, dst, fill, vd, *valid_min, invalid_value);
    }
    return py::make_tuple(out, valid);
}

farray resample_field_py(const farray& field, const std::vector<double>& step,
                         const std::vector<double>& first, const std::vector<index_t>& out_shape) {
    const Shape3 fs = field_shape(field, "field");
    check_image_size(fs);
    if (step.size() != 3 || first.size() != 3) throw py::value_error("step and first must be (z, y, x)");
    const Shape3 os = out_shape3(out_shape);
    farray out({os.nz, os.ny, os.nx, index_t(3)});
    const float* src = field.data();
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        resample_field(src, fs, step.data(), first.data(), dst, os);
    }
    return out;
}

}  // namespace

void bind_warp(py::module_& m) {
    m.def("resample_affine", &resample_affine_py, py::arg("image").noconvert(),
          py::arg("matrix").noconvert(), py::arg("out_shape"), py::arg("order"), py::arg("fill"),
          "image (z,y,x) float32; matrix 4x4 float64: output index -> input index.");
    m.def("resample_displacement", &resample_displacement_py, py::arg("image").noconvert(),
          py::arg("displacement").noconvert(), py::arg("out_to_world").noconvert(),
          py::arg("world_to_image").noconvert(), py::arg("field_from_out").noconvert(),
          py::arg("out_shape"), py::arg("order"), py::arg("fill"),
          "Resample image through a dense displacement field (see ctreg/warp.hpp).");
    m.def("compose_fields", &compose_fields_py, py::arg("outer").noconvert(),
          py::arg("inner").noconvert(), py::arg("spacing"),
          "Displacement of phi_outer o phi_inner (see ctreg/warp.hpp).");
    m.def("resample_field", &resample_field_py, py::arg("field").noconvert(), py::arg("step"),
          py::arg("first"), py::arg("out_shape"),
          "Trilinear resampling of a vector field on an axis-aligned grid (see ctreg/warp.hpp).");
    m.def("resample_composed", &resample_composed_py, py::arg("image").noconvert(),
          py::arg("inner").noconvert(), py::arg("outer").noconvert(), py::arg("spacing"),
          py::arg("out_to_world").noconvert(), py::arg("world_to_image").noconvert(),
          py::arg("fill"), py::arg("valid_min") = py::none(), py::arg("invalid_value") = 0.0f,
          "Trilinear resampling through phi_outer o phi_inner without writing it -> warped, or "
          "(warped, valid) with valid_min (see ctreg/warp.hpp).");
    m.def("affine_moments", &affine_moments_py, py::arg("image").noconvert(),
          py::arg("grad_z").noconvert(), py::arg("grad_y").noconvert(), py::arg("grad_x").noconvert(),
          py::arg("reference").noconvert(), py::arg("mask").noconvert(), py::arg("matrix").noconvert(),
          py::arg("valid_min"),
          "Sums for the value and affine gradient of SSD/NCC, fused with the resampling "
          "(see ctreg/warp.hpp).");
    m.def("warp_with_gradient", &warp_with_gradient_py, py::arg("image").noconvert(),
          py::arg("grad_z").noconvert(), py::arg("grad_y").noconvert(), py::arg("grad_x").noconvert(),
          py::arg("displacement").noconvert(), py::arg("out_to_world").noconvert(),
          py::arg("world_to_image").noconvert(), py::arg("out_shape"), py::arg("fill"),
          py::arg("valid_min"), py::arg("invalid_value"),
          "Resampling fused with the resampled image gradient -> (warped, valid, gradient) "
          "(see ctreg/warp.hpp).");
    m.def("_set_simd_dispatch", &set_simd_dispatch, py::arg("enabled"),
          "Testing aid: False forces the portable resampling code path; returns the old setting.");
}

}  // namespace ctreg::bind
