// Resampling of a scalar image through an affine map or a dense displacement field.
//
// Index conventions: a continuous index (k, j, i) addresses the voxel centre data[k][j][i].
// A point is inside the image when 0 <= k <= nz-1, 0 <= j <= ny-1 and 0 <= i <= nx-1
// (no extrapolation beyond the outermost voxel centres); points outside, and NaN points,
// receive `fill`.  Points within 1e-6 voxel outside a border count as on it, so that the
// round-off of composed matrices does not drop the outermost voxels.  order 0 is nearest
// neighbour (round half up: floor(x + 0.5)), order 1 is trilinear with float weights.  This
// matches scipy.ndimage.map_coordinates(order, mode='constant', cval=fill).
// Images must have fewer than 2^31 voxels (32-bit offsets); on x86-64 an AVX2 code path is
// chosen at run time, with results identical to the portable one.
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// out[q] = interp(image, out_to_in * q) for every output index q = (k, j, i).
//   image:     float32 (in.nz, in.ny, in.nx)
//   out_to_in: output index (k, j, i) -> continuous input index (k, j, i)
//   out:       float32 (out_shape), written completely
void resample_affine(const float* image, const Shape3& in, const Mat4& out_to_in, float* out,
                     const Shape3& out_shape, int order, float fill);

// For each output index q:  p = out_to_world q;  u = field(field_from_out q);
//                           out[q] = interp(image, world_to_image (p + u)).
//   field:          float32 (fs.nz, fs.ny, fs.nx, 3), vectors in the frame of p
//   field_from_out: nullptr -> the field lies on the output grid (fs == out_shape, no field
//                   interpolation); otherwise output index -> continuous field index, and the
//                   field is interpolated trilinearly with its index clamped to the grid
//                   (nearest edge value outside).
void resample_displacement(const float* image, const Shape3& in, const float* field,
                           const Shape3& fs, const Mat4& out_to_world, const Mat4& world_to_image,
                           const Mat4* field_from_out, float* out, const Shape3& out_shape,
                           int order, float fill);

// Displacement of phi_outer ∘ phi_inner on one grid: out(p) = inner(p) + outer(p + inner(p)).
// Fields are (z, y, x, 3) float32 with components (dz, dy, dx) in mm along the array axes; grid
// point (k, j, i) sits at (k sz, j sy, i sx) mm.  outer is interpolated trilinearly with its
// index clamped to the grid (scipy map_coordinates mode='nearest'; a NaN index reads voxel 0).
// out must not alias outer or inner.
void compose_fields(const float* outer, const float* inner, const Shape3& shape,
                    const Spacing3& spacing, float* out);

// resample_displacement (order 1, field on the output grid) through the displacement of
// phi_outer ∘ phi_inner, without writing it: out equals
// resample_displacement(image, compose_fields(outer, inner), ...) bit for bit.  inner and outer
// are (shape, 3) fields as for compose_fields (spacing: their grid's, in mm); the output grid
// is theirs.  With valid (uint8, on the output grid; may be nullptr): valid[q] = out[q] >=
// valid_min, and out[q] = invalid_value where it is not.
void resample_composed(const float* image, const Shape3& in, const float* inner,
                       const float* outer, const Shape3& shape, const Spacing3& spacing,
                       const Mat4& out_to_world, const Mat4& world_to_image, float* out,
                       float fill, std::uint8_t* valid = nullptr, float valid_min = 0.0f,
                       float invalid_value = 0.0f);

// out (os, 3): the (fs, 3) field trilinearly at field index first + (k, j, i) * step (per axis),
// the index clamped to the field's grid (its border value continues outside).
void resample_field(const float* field, const Shape3& fs, const double step[3],
                    const double first[3], float* out, const Shape3& os);

// Sums for the exact value and gradient of SSD or NCC with respect to an affine map, fused
// with the resampling (no image is written).  For every output voxel q = (k, j, i) with
// mask[q] != 0 (mask: uint8 on the output grid, nullptr = all): x = out_to_in q; the image is
// sampled trilinearly at x exactly as resample_affine(order 1) does, giving w, and so are the
// three images grad[0..2] (its derivative along its own index axes z, y, x), giving g.  The
// voxel counts when x lies inside the image and w >= valid_min.  With r = reference[q],
// out (42 doubles) receives
//   out[0..5]   = N, sum r, sum w, sum r r, sum w w, sum r w;
//   out[6 + 12 m + c]          = sum a_m g_c            (m: a_0 = r, a_1 = w, a_2 = 1);
//   out[6 + 12 m + 3 + 3 c + b] = sum a_m g_c q_b.
// The derivative of any cost whose dcost/dw is a linear combination of r, w and 1 then follows
// without a second pass.  Rows are summed in a fixed order: the result does not depend on the
// thread count.
void affine_moments(const float* image, const Shape3& in, const float* const grad[3],
                    const float* reference, const std::uint8_t* mask, const Shape3& out_shape,
                    const Mat4& out_to_in, float valid_min, double* out);
constexpr int kAffineMoments = 42;

// Resampling fused with the resampled image gradient, for the deformable stages.  For each
// output voxel q the sample point is x = world_to_image (out_to_world q + u(q)) (u: field on
// the output grid, (z, y, x, 3) in the frame of out_to_world; nullptr = no displacement), as in
// resample_displacement / resample_affine (order 1).  The image and its three derivative
// images grad[0..2] (along its own index axes z, y, x) are sampled there with the same
// weights, giving w and g (w = fill, g = 0 outside the image).  Outputs on the output grid:
//   out[q]      = w when w >= valid_min, else invalid_value;
//   valid[q]    = 1 when w >= valid_min, else 0;
//   out_grad[q] = L^T g (3 floats), L the float32 linear part of world_to_image, i.e. the
//                 derivative of w with respect to a displacement of the sample point in the
//                 frame of out_to_world.
void warp_with_gradient(const float* image, const float* const grad[3], const Shape3& in,
                        const float* field, const Mat4& out_to_world, const Mat4& world_to_image,
                        float fill, float valid_min, float invalid_value, float* out,
                        std::uint8_t* valid, float* out_grad, const Shape3& out_shape);

// Testing aid: false makes the resampling and smoothing kernels use their portable code path
// instead of the AVX2 one picked at run time on x86-64 (the results are identical); returns
// the previous setting.
bool set_simd_dispatch(bool enabled);
bool simd_dispatch_enabled();

// a * b (4x4, row-major): first b, then a.
Mat4 compose(const Mat4& a, const Mat4& b);

}  // namespace ctreg
