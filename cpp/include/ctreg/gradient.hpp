// Image gradient by finite differences.
#pragma once

#include "ctreg/common.hpp"

namespace ctreg {

// out (z, y, x, 3) float32 = (d/dz, d/dy, d/dx) of image in value per mm (array axes):
// central differences inside, one-sided first differences at the borders (np.gradient with
// edge_order=1), 0 along an axis of length 1.
void gradient(const float* image, const Shape3& s, const Spacing3& spacing, float* out);

}  // namespace ctreg
