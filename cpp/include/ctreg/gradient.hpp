// Image gradient by finite differences.
#pragma once

#include "ctreg/common.hpp"

namespace ctreg {

// out (z, y, x, 3) float32 = (d/dz, d/dy, d/dx) of image in value per mm (array axes):
// central differences inside, one-sided first differences at the borders (np.gradient with
// edge_order=1), 0 along an axis of length 1.
void gradient(const float* image, const Shape3& s, const Spacing3& spacing, float* out);

// The finite-difference weights of gradient(), as float: central 1 / (2h), one-sided 1 / h.
struct GradientWeights {
    float cz, cy, cx, ez, ey, ex;
    explicit GradientWeights(const Spacing3& sp)
        : cz(float(0.5 / sp.z)), cy(float(0.5 / sp.y)), cx(float(0.5 / sp.x)),
          ez(float(1.0 / sp.z)), ey(float(1.0 / sp.y)), ex(float(1.0 / sp.x)) {}
};

// Row (k, j) of gradient(): g receives nx * 3 floats, exactly as gradient() writes them.
inline void gradient_row(const float* image, const Shape3& s, const GradientWeights& w, index_t k,
                         index_t j, float* g) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    const index_t sz = ny * nx, sy = nx;
    const float* f = image + s.at(k, j, 0);
    // z and y: two rows (or one row twice) with a scale.
    const float *zp, *zm, *yp, *ym;
    float wz, wy;
    if (nz == 1) { zp = zm = f; wz = 0.0f; }
    else if (k == 0) { zp = f + sz; zm = f; wz = w.ez; }
    else if (k == nz - 1) { zp = f; zm = f - sz; wz = w.ez; }
    else { zp = f + sz; zm = f - sz; wz = w.cz; }
    if (ny == 1) { yp = ym = f; wy = 0.0f; }
    else if (j == 0) { yp = f + sy; ym = f; wy = w.ey; }
    else if (j == ny - 1) { yp = f; ym = f - sy; wy = w.ey; }
    else { yp = f + sy; ym = f - sy; wy = w.cy; }
    for (index_t i = 0; i < nx; ++i) {
        g[3 * i] = (zp[i] - zm[i]) * wz;
        g[3 * i + 1] = (yp[i] - ym[i]) * wy;
    }
    if (nx == 1) {
        g[2] = 0.0f;
    } else {
        g[2] = (f[1] - f[0]) * w.ex;
        for (index_t i = 1; i < nx - 1; ++i) g[3 * i + 2] = (f[i + 1] - f[i - 1]) * w.cx;
        g[3 * (nx - 1) + 2] = (f[nx - 1] - f[nx - 2]) * w.ex;
    }
}

}  // namespace ctreg
