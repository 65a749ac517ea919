// Pyramid preprocessing: Gaussian smoothing evaluated only on a subsampling lattice (the
// pyramid's downsample), clipping with the no-data fill on a strided view (a crop).
#pragma once

#include "ctreg/common.hpp"

namespace ctreg {

// out[ko, jo, io] = smooth(array)[ko fz, jo fy, io fx] for a scalar (z, y, x) image, with
// smooth() of ctreg/smooth.hpp (z pass, then y, then x; replicated borders; the same float
// operations in the same order, so every value is bit-identical to smoothing the whole grid
// and slicing it), but the z pass runs only on the kept slices, the y pass only on their kept
// rows and the x pass only on the kept voxels.
//   out: ((nz + fz - 1) / fz, (ny + fy - 1) / fy, (nx + fx - 1) / fx) float32.
void smooth_subsample(const float* array, const Shape3& s, const double sigma_vox[3], double truncate,
                      const index_t factors[3], float* out);

// out (contiguous, shape s) = valid ? clip(image, lo, hi) : fill (NaN stays NaN), reading
// image[k * isz + j * isy + i] and valid[k * vsz + j * vsy + i] (element strides: a crop of a
// C-contiguous volume); valid may be nullptr (every voxel valid).  The same comparisons as
// fields.hpp's clip_fill.
void clip_fill_view(const float* image, index_t isz, index_t isy, const std::uint8_t* valid, index_t vsz,
                    index_t vsy, const Shape3& s, float lo, float hi, float fill, float* out);

}  // namespace ctreg
