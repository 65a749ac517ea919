// Separable Gaussian smoothing of scalar images and interleaved vector fields.
#pragma once

#include <vector>

#include "ctreg/common.hpp"

namespace ctreg {

// The normalised 1-D kernel of scipy.ndimage.gaussian_filter: radius int(truncate*sigma + 0.5),
// weights exp(-x^2 / (2 sigma^2)) / sum, x = -radius..radius (sigma in voxels; {1} when
// sigma <= 0 or the radius is 0).
std::vector<double> gaussian_kernel(double sigma_vox, double truncate);

// out = Gaussian(array) along z, then y, then x, boundary 'nearest' (replicate the edge).
//   array, out: float32 (s.nz, s.ny, s.nx, ncomp) interleaved (ncomp = 1 for a scalar image);
//               every component is smoothed separately; out must not alias array.
//   sigma_vox:  (z, y, x) standard deviations in voxels; 0 on an axis = no smoothing on it.
//   addend:     nullptr, or an array like `array`: then out = Gaussian(array + addend), the sum
//               formed as the first pass reads its input (no separate pass, no temporary).
void smooth(const float* array, const Shape3& s, int ncomp, const double sigma_vox[3],
            double truncate, float* out, const float* addend = nullptr);

}  // namespace ctreg
