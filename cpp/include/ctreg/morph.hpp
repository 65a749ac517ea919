// Binary dilation by a (possibly anisotropic) ball: ctreg.lung_focus grows the lungs by a
// distance in millimetres on a coarse grid.
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// out[k, j, i] = 1 when some mask voxel (k + dz, j + dy, i + dx) inside the grid has
// |dx| <= reach[(dz + rz) * (2 ry + 1) + (dy + ry)] (a reach < 0: no voxel of that (dz, dy)),
// for |dz| <= rz, |dy| <= ry; else 0.  With reach[dz, dy] the largest |dx| whose offset lies in
// the ball, this is the dilation of mask by the ball (the ball's x-extent is an interval for
// every (dz, dy)).  Every reach must be < 255.  mask, out: C-contiguous uint8 of shape s.
void dilate_rows(const std::uint8_t* mask, const Shape3& s, const int* reach, index_t rz, index_t ry,
                 std::uint8_t* out);

}  // namespace ctreg
