// Pointwise kernels on dense (z, y, x, 3) float32 fields (components mm along the array axes),
// formerly Numba (ctreg/_kernels.py, kept as the tests' reference): no compilation at run time.
//
// Every output voxel is computed independently (OpenMP over z, static schedule); reductions are
// accumulated per z slice and combined in slice order afterwards, so every result is the same
// bit for bit on any thread count.  Arithmetic is double, stored float32, in the same order as
// the Numba kernels (bit-identical to them; tests/test_kernels_native_fields.py).
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// out = factor * v (double product, stored float32); out may alias v.
void scale_field(const float* v, const Shape3& s, double factor, float* out);

// out[k, j, i] = vec @ u[k, j, i] + idx[:, :3] @ (k, j, i) + idx[:, 3]; vec row-major 3x3,
// idx row-major 3x4 (double).  out must not alias u.
void affine_field(const float* u, const Shape3& s, const double* vec, const double* idx, float* out);

// One fixed-point step of the field inverse: out(p) = -u(p + v(p)) (u trilinear, position
// clamped to the grid); returns max |out(p) - v(p)| in mm.  out must alias neither u nor v.
double invert_step(const float* u, const float* v, const Shape3& s, const Spacing3& sp, float* out);

// One pass over a Jacobian determinant map (where mask != 0, all voxels when mask is nullptr):
// out7 = (count, min, max, count <= 0, count > 0, sum log J, sum (log J)^2 over J > 0).
// NaN counts in neither class and min/max ignore it.
void jacobian_stats(const float* jac, const Shape3& s, const std::uint8_t* mask, double* out7);
// jacobian_stats without a mask (out14[0..6]) and with mask (out14[7..13]), in one pass: the
// same values as the two calls.  accumulate: add onto out14 (which holds the sums so far)
// instead of starting from zero; slabs of a map given in z order give the whole map's values.
void jacobian_stats_pair(const float* jac, const Shape3& s, const std::uint8_t* mask, double* out14,
                         bool accumulate = false);

// out = clip(image, lo, hi) where valid != 0 (everywhere when valid is nullptr), fill elsewhere;
// NaN stays NaN (as numpy.clip).  One parallel pass (ctreg.level.preprocess).
void clip_fill(const float* image, const Shape3& s, const std::uint8_t* valid, float lo, float hi,
               float fill, float* out);

}  // namespace ctreg
