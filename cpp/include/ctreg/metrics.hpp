// Similarity metrics between the reference image R and the warped floating image W, as COSTS to
// minimise, with their gradient with respect to W.
//
// Common arguments:
//   reference, warped : (z, y, x) float32, shape s;
//   mask              : (z, y, x) uint8 (nonzero = counted) or nullptr (every voxel); N = count;
//                       N == 0 throws std::invalid_argument;
//   warped_gradient   : nullptr -> `out` (z, y, x) receives dcost/dW (0 outside the mask);
//                       else (z, y, x, 3) -> `out` (z, y, x, 3) receives dcost/dW * warped_gradient
//                       (the gradient with respect to a displacement), fused in the same pass.
// Every sum is accumulated per z-slice in double and the slices are added in order, so the value
// and gradient do not depend on the thread count.
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

struct MetricArgs {
    const float* reference = nullptr;
    const float* warped = nullptr;
    const std::uint8_t* mask = nullptr;
    const float* warped_gradient = nullptr;
    Shape3 shape;
    float* out = nullptr;
};

// Number of counted voxels (shape.size() without a mask).
index_t mask_count(const std::uint8_t* mask, const Shape3& shape);

// sum_mask (W - R)^2 / N.
double ssd(const MetricArgs& a);

// -NCC = -cov(R, W) / sqrt(var R var W) over the mask (global).  When either image is flat over the
// mask (var <= 1e-12 * its mean square) the cost and the gradient are 0.
double ncc(const MetricArgs& a);

// -1/N sum_{v in mask} CC_v^2 (ANTs-style local NCC).  CC_v is computed over the box window
// |k' - k| <= rz, |j' - j| <= ry, |i' - i| <= rx, clipped at the image border and restricted to
// mask voxels (padding outside the mask never enters a window):
//   CC_v^2 = cross^2 / (varR varW), with cross, varR, varW the window sums of centred products;
// a window with varR * varW <= 1e-5 (intensity^4) counts as CC^2 = 0 with zero gradient.
// Scratch: a (z, y, x, 4) float32 field, plus per thread about 1 MiB of doubles (a ring of
// 2 rz + 2 partial planes over a band of rows).
double lncc(const MetricArgs& a, int rz, int ry, int rx);

// -MI with Parzen windowing as Mattes et al. 2003 / ITK: `bins` bins per image; the reference
// takes a zero-order (box) window: bin floor((R - r0) / (r1 - r0) * bins) clipped to
// [0, bins - 1]; the warped image a cubic B-spline window centred at the continuous bin
// x = 1 + (W - w0) / (w1 - w0) * (bins - 3) in [1, bins - 2], which spreads over bins
// floor(x) - 1 .. floor(x) + 2 (so no mass leaves the histogram).  Values outside the ranges
// are clipped (zero gradient there).  p(a, b) = 1/N sum_mask [bin_R = a] beta3(x - b),
// MI = sum p log(p / (p_R p_W)).  Requires bins >= 5, r1 > r0, w1 > w0.
double mattes_mi(const MetricArgs& a, int bins, double r0, double r1, double w0, double w1);

}  // namespace ctreg
