#include "ctreg/gradient.hpp"

namespace ctreg {

void gradient(const float* image, const Shape3& s, const Spacing3& sp, float* out) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    const index_t sz = ny * nx, sy = nx;
    // Central: (f[+1] - f[-1]) / (2h); one-sided: (f[1] - f[0]) / h.
    const float cz = float(0.5 / sp.z), cy = float(0.5 / sp.y), cx = float(0.5 / sp.x);
    const float ez = float(1.0 / sp.z), ey = float(1.0 / sp.y), ex = float(1.0 / sp.x);
#pragma omp parallel for collapse(2) schedule(dynamic, 32) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        for (index_t j = 0; j < ny; ++j) {
            const float* f = image + s.at(k, j, 0);
            float* g = out + s.at(k, j, 0) * 3;
            // z and y: two rows (or one row twice) with a scale.
            const float *zp, *zm, *yp, *ym;
            float wz, wy;
            if (nz == 1) { zp = zm = f; wz = 0.0f; }
            else if (k == 0) { zp = f + sz; zm = f; wz = ez; }
            else if (k == nz - 1) { zp = f; zm = f - sz; wz = ez; }
            else { zp = f + sz; zm = f - sz; wz = cz; }
            if (ny == 1) { yp = ym = f; wy = 0.0f; }
            else if (j == 0) { yp = f + sy; ym = f; wy = ey; }
            else if (j == ny - 1) { yp = f; ym = f - sy; wy = ey; }
            else { yp = f + sy; ym = f - sy; wy = cy; }
            for (index_t i = 0; i < nx; ++i) {
                g[3 * i] = (zp[i] - zm[i]) * wz;
                g[3 * i + 1] = (yp[i] - ym[i]) * wy;
            }
            if (nx == 1) {
                g[2] = 0.0f;
            } else {
                g[2] = (f[1] - f[0]) * ex;
                for (index_t i = 1; i < nx - 1; ++i) g[3 * i + 2] = (f[i + 1] - f[i - 1]) * cx;
                g[3 * (nx - 1) + 2] = (f[nx - 1] - f[nx - 2]) * ex;
            }
        }
    }
}

}  // namespace ctreg
