// Cubic B-spline free-form deformation (Rueckert 1999 / NiftyReg layout): evaluation on the dense
// grid, its exact adjoint, and the thin-plate bending energy with its gradient.
//
// Layout (integer control spacing t = (tz, ty, tx) voxels, every t >= 1):
//   * control point (a, b, c) sits at dense index ((a - 1) tz, (b - 1) ty, (c - 1) tx);
//   * dense voxel (k, j, i) takes its 4 x 4 x 4 support from the control points
//     (k / tz + l, j / ty + m, i / tx + n), l, m, n = 0..3, with the cubic B-spline weights
//     B_l(fz) B_m(fy) B_n(fx), fz = (k % tz) / tz (integer division);
//   * grid size per axis: (n - 1) / t + 4 (integer division) -- the smallest grid that holds the
//     support of the last voxel n - 1 (equal to ceil((n - 1) / t) + 3 unless t divides n - 1,
//     where one more plane is needed because the last voxel reads index (n - 1) / t + 3, with
//     weight B_3(0) = 0).
// Coefficient grids and dense fields are (z, y, x, 3) float32, C order; the 3 components are any
// vector (ctreg stores world (x, y, z) mm displacements) and are treated independently.
#pragma once

#include "ctreg/common.hpp"

namespace ctreg {

struct Int3 {
    index_t z = 1, y = 1, x = 1;
};

// Cubic B-spline basis at f in [0, 1): w[0..3] = B_0(f) .. B_3(f); they sum to one.
inline void bspline_weights(double f, double w[4]) {
    const double g = 1.0 - f, f2 = f * f, f3 = f2 * f;
    w[0] = g * g * g / 6.0;
    w[1] = (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0;
    w[2] = (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0;
    w[3] = f3 / 6.0;
}

// Their derivatives dB_l/df.
inline void bspline_derivatives(double f, double d[4]) {
    const double g = 1.0 - f, f2 = f * f;
    d[0] = -0.5 * g * g;
    d[1] = 1.5 * f2 - 2.0 * f;
    d[2] = -1.5 * f2 + f + 0.5;
    d[3] = 0.5 * f2;
}

// Grid shape for a dense shape and a control spacing in voxels.
Shape3 bspline_grid_shape(const Shape3& dense, const Int3& t);

// out (dense, 3) = B coeffs.  `grid` must equal bspline_grid_shape(dense, t) or be larger.
void bspline_to_dense(const float* coeffs, const Shape3& grid, const Int3& t, float* out,
                      const Shape3& dense);

// out (grid, 3) = B^T field: the exact transpose of bspline_to_dense.  Deterministic: each
// group of tz dense slices is reduced by one thread (double), then the four groups that touch a
// control plane are added in a fixed order.  Scratch: 4 * (grid.nz) * grid.ny * grid.nx * 3 doubles.
void bspline_adjoint(const float* field, const Shape3& dense, const Int3& t, float* out,
                     const Shape3& grid);

// Thin-plate bending energy, NiftyReg's approximation: the second derivatives of the B-spline
// field (in mm^-2, using the voxel spacing in mm) are evaluated at the interior control points
// (1..c-2 on each axis, where the basis is (1/6, 4/6, 1/6)), and
//   E = 1/P sum_points sum_components (u_zz^2 + u_yy^2 + u_xx^2 + 2 u_zy^2 + 2 u_zx^2 + 2 u_yx^2)
// with P the number of interior control points.  grad (grid, 3) receives dE/dcoeffs (exact up to
// float rounding; nullptr: value only).  Scratch: 18 floats per control point.
double bending_energy(const float* coeffs, const Shape3& grid, const Int3& t, const Spacing3& voxel_mm,
                      float* grad);

}  // namespace ctreg
