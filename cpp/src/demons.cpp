#include "ctreg/demons.hpp"

#include <cmath>
#include <vector>

#include "ctreg/gradient.hpp"

namespace ctreg {

double demons_forces(const float* R, const float* W, const float* grad_r, const float* grad_w,
                     const std::uint8_t* mask, const Shape3& s, const Spacing3& sp, bool symmetric,
                     double norm_mm2, double max_step_mm, double eps, float* out, index_t* count) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    const double inv_k = 1.0 / norm_mm2;
    const double max_step2 = max_step_mm * max_step_mm;
    const GradientWeights gw(sp);
    std::vector<double> slice_ssd(static_cast<std::size_t>(nz), 0.0);
    std::vector<index_t> slice_cnt(static_cast<std::size_t>(nz), 0);
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> row(grad_w ? 0 : std::size_t(nx * 3));
#pragma omp for schedule(dynamic, 1)
        for (index_t k = 0; k < nz; ++k) {
            double ssd = 0.0;
            index_t cnt = 0;
            for (index_t j = 0; j < ny; ++j) {
                const index_t at = s.at(k, j, 0);
                const float* g;
                if (grad_w) {
                    g = grad_w + 3 * at;
                } else {
                    gradient_row(W, s, gw, k, j, row.data());
                    g = row.data();
                }
                const float* gr = symmetric ? grad_r + 3 * at : nullptr;
                float* o = out + 3 * at;
                for (index_t i = 0; i < nx; ++i) {
                    float* oi = o + 3 * i;
                    if (mask && mask[at + i] == 0) {
                        oi[0] = oi[1] = oi[2] = 0.0f;
                        continue;
                    }
                    const double d = double(W[at + i]) - double(R[at + i]);
                    ssd += d * d;
                    ++cnt;
                    double j0, j1, j2;
                    if (symmetric) {
                        j0 = 0.5 * (double(gr[3 * i]) + double(g[3 * i]));
                        j1 = 0.5 * (double(gr[3 * i + 1]) + double(g[3 * i + 1]));
                        j2 = 0.5 * (double(gr[3 * i + 2]) + double(g[3 * i + 2]));
                    } else {
                        j0 = g[3 * i], j1 = g[3 * i + 1], j2 = g[3 * i + 2];
                    }
                    const double den = j0 * j0 + j1 * j1 + j2 * j2 + d * d * inv_k;
                    if (!(den > eps)) {  // also NaN
                        oi[0] = oi[1] = oi[2] = 0.0f;
                        continue;
                    }
                    const double f = -d / den;
                    double u0 = f * j0, u1 = f * j1, u2 = f * j2;
                    const double n2 = u0 * u0 + u1 * u1 + u2 * u2;
                    if (n2 > max_step2) {  // a square root only where the step is clipped
                        const double c = max_step_mm / std::sqrt(n2);
                        u0 *= c, u1 *= c, u2 *= c;
                    }
                    oi[0] = float(u0), oi[1] = float(u1), oi[2] = float(u2);
                }
            }
            slice_ssd[std::size_t(k)] = ssd;
            slice_cnt[std::size_t(k)] = cnt;
        }
    }
    double total = 0.0;
    index_t n = 0;
    for (index_t k = 0; k < nz; ++k) total += slice_ssd[std::size_t(k)], n += slice_cnt[std::size_t(k)];
    *count = n;
    return total;
}

}  // namespace ctreg
