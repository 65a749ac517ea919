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

// An image defined voxel by voxel from others, never stored whole (the pyramid's sources):
//   mask && !mask[v] ? outside : (image ? (valid && !valid[v] ? fill : clip(image[v], lo, hi))
//                                       : inside)
// reading image[k * isz + j * isy + i] (and valid, mask with their own element strides: crops
// of C-contiguous volumes); the comparisons of clip_fill_view (NaN stays NaN).
struct SourceOp {
    const float* image = nullptr;
    index_t isz = 0, isy = 0;
    const std::uint8_t* valid = nullptr;
    index_t vsz = 0, vsy = 0;
    const std::uint8_t* mask = nullptr;
    index_t msz = 0, msy = 0;
    float lo = 0, hi = 0, fill = 0, inside = 0, outside = 0;
};

// Row (k, j) of a SourceOp image: nx values into out.
void source_row(const SourceOp& op, index_t k, index_t j, index_t nx, float* out);

// smooth_subsample of the SourceOp image of shape s, bit for bit as smooth_subsample of that
// image stored whole.
void smooth_subsample_source(const SourceOp& op, const Shape3& s, const double sigma_vox[3], double truncate,
                             const index_t factors[3], float* out);

// out (contiguous, shape s) = valid ? clip(image, lo, hi) : fill (NaN stays NaN), reading
// image[k * isz + j * isy + i] and valid[k * vsz + j * vsy + i] (element strides: a crop of a
// C-contiguous volume); valid may be nullptr (every voxel valid).  The same comparisons as
// fields.hpp's clip_fill.
void clip_fill_view(const float* image, index_t isz, index_t isy, const std::uint8_t* valid, index_t vsz,
                    index_t vsy, const Shape3& s, float lo, float hi, float fill, float* out);

// out[i] = image[i] > above ? (float) interp(image[i]) : image[i] for n values, where interp is
// NumPy's np.interp(x, xp, fp) in double (xp strictly increasing, m >= 2 points; below xp[0]
// fp[0], above xp[m-1] fp[m-1], at a knot its fp, else slope_j (x - xp_j) + fp_j with
// slope_j = (fp_{j+1} - fp_j) / (xp_{j+1} - xp_j)): bit for bit
// np.where(image > above, np.interp(image, xp, fp), image).astype(float32); NaN stays NaN.
void map_piecewise_linear(const float* image, index_t n, const double* xp, const double* fp, index_t m,
                          float above, float* out);

}  // namespace ctreg
