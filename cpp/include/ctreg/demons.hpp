// Demons forces (the update of one demons iteration); see ctreg.ops.demons_forces.
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// With diff = W - R and J = (grad R + grad W) / 2 (symmetric) or grad W:
//   out = -diff J / (|J|^2 + diff^2 / norm_mm2), 0 outside the mask (nullptr: everywhere)
// and where that denominator is not above eps, |out| clipped to max_step_mm (may be +inf).
// grad_w (z, y, x, 3) may be nullptr: the gradient of W is then computed in place, exactly as
// gradient() would (bit for bit).  grad_r is read only when symmetric.  Arithmetic is double,
// the result float32.  Returns the sum of diff^2 over the mask (per slice, added in slice
// order: independent of the thread count) and sets *count to the number of mask voxels.
double demons_forces(const float* reference, const float* warped, const float* grad_r,
                     const float* grad_w, const std::uint8_t* mask, const Shape3& s,
                     const Spacing3& spacing, bool symmetric, double norm_mm2,
                     double max_step_mm, double eps, float* out, index_t* count);

// max over the (z, y, x, 3) field v of sqrt((vz/sz)^2 + (vy/sy)^2 + (vx/sx)^2) (its length
// in voxels); NaN when any component is NaN.  The max does not depend on the summation order.
double max_norm_vox(const float* v, const Shape3& s, const Spacing3& spacing);

// out (z, y, x) = det(I + grad u) of the (z, y, x, 3) field u (mm along the array axes): central
// differences inside, one-sided at the borders, zero derivative along an axis of one point.
void jacobian_determinant(const float* u, const Shape3& s, const Spacing3& spacing, float* out);

}  // namespace ctreg
