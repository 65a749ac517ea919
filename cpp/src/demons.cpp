#include "ctreg/demons.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ctreg/gradient.hpp"
#include "ctreg/simd.hpp"
#include "ctreg/warp.hpp"  // simd_dispatch_enabled()

namespace ctreg {

namespace {

// One row of forces, branch-free so that it vectorises: out (n, 3) and the masked squared
// differences sq (n, summed by the caller in order).  Every lane computes -d / den and the
// clip factor; selects zero them where the voxel is masked out or the denominator is too small.
CTREG_ALWAYS_INLINE inline void forces_row_body(const float* __restrict R, const float* __restrict W,
                                                const float* __restrict g, const float* __restrict gr,
                                                const std::uint8_t* __restrict mask, index_t n,
                                                bool symmetric, double inv_k, double max_step,
                                                double max_step2, double eps, float* __restrict out,
                                                double* __restrict sq) {
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        const bool counted = mask == nullptr || mask[i] != 0;
        const double d = double(W[i]) - double(R[i]);
        double j0, j1, j2;
        if (symmetric) {
            j0 = 0.5 * (double(gr[3 * i]) + double(g[3 * i]));
            j1 = 0.5 * (double(gr[3 * i + 1]) + double(g[3 * i + 1]));
            j2 = 0.5 * (double(gr[3 * i + 2]) + double(g[3 * i + 2]));
        } else {
            j0 = g[3 * i], j1 = g[3 * i + 1], j2 = g[3 * i + 2];
        }
        const double den = j0 * j0 + j1 * j1 + j2 * j2 + d * d * inv_k;
        const bool ok = counted && den > eps;  // false for NaN too
        const double f = -d / (ok ? den : 1.0);
        double u0 = f * j0, u1 = f * j1, u2 = f * j2;
        const double n2 = u0 * u0 + u1 * u1 + u2 * u2;
        const double c = n2 > max_step2 ? max_step / std::sqrt(n2 > max_step2 ? n2 : 1.0) : 1.0;
        u0 = ok ? u0 * c : 0.0;
        u1 = ok ? u1 * c : 0.0;
        u2 = ok ? u2 * c : 0.0;
        out[3 * i] = float(u0), out[3 * i + 1] = float(u1), out[3 * i + 2] = float(u2);
        sq[i] = counted ? d * d : 0.0;
    }
}

using ForcesRow = void (*)(const float*, const float*, const float*, const float*,
                           const std::uint8_t*, index_t, bool, double, double, double, double,
                           float*, double*);

void forces_row_generic(const float* R, const float* W, const float* g, const float* gr,
                        const std::uint8_t* mask, index_t n, bool symmetric, double inv_k,
                        double max_step, double max_step2, double eps, float* out, double* sq) {
    forces_row_body(R, W, g, gr, mask, n, symmetric, inv_k, max_step, max_step2, eps, out, sq);
}

#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void forces_row_avx2(const float* R, const float* W, const float* g,
                                                     const float* gr, const std::uint8_t* mask,
                                                     index_t n, bool symmetric, double inv_k,
                                                     double max_step, double max_step2, double eps,
                                                     float* out, double* sq) {
    forces_row_body(R, W, g, gr, mask, n, symmetric, inv_k, max_step, max_step2, eps, out, sq);
}
#endif

ForcesRow select_forces_row() {
#if CTREG_X86_DISPATCH
    if (use_avx2()) return &forces_row_avx2;
#endif
    return &forces_row_generic;
}

}  // namespace

double demons_forces(const float* R, const float* W, const float* grad_r, const float* grad_w,
                     const std::uint8_t* mask, const Shape3& s, const Spacing3& sp, bool symmetric,
                     double norm_mm2, double max_step_mm, double eps, float* out, index_t* count) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    const double inv_k = 1.0 / norm_mm2;
    const double max_step2 = max_step_mm * max_step_mm;
    const GradientWeights gw(sp);
    const ForcesRow row_fn = select_forces_row();
    std::vector<double> slice_ssd(static_cast<std::size_t>(nz), 0.0);
    std::vector<index_t> slice_cnt(static_cast<std::size_t>(nz), 0);
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> row(grad_w ? 0 : std::size_t(nx * 3));
        std::vector<double> sq(static_cast<std::size_t>(nx));
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
                const std::uint8_t* mk = mask ? mask + at : nullptr;
                row_fn(R + at, W + at, g, symmetric ? grad_r + 3 * at : nullptr, mk, nx, symmetric,
                       inv_k, max_step_mm, max_step2, eps, out + 3 * at, sq.data());
                for (index_t i = 0; i < nx; ++i) ssd += sq[std::size_t(i)];  // in order
                if (mk)
                    for (index_t i = 0; i < nx; ++i) cnt += mk[i] != 0;
                else
                    cnt += nx;
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

// max over the field of |v| in voxels, NaN if any component is NaN (see ctreg.ops.exp_field).
double max_norm_vox(const float* v, const Shape3& s, const Spacing3& sp) {
    const double iz2 = 1.0 / (sp.z * sp.z), iy2 = 1.0 / (sp.y * sp.y), ix2 = 1.0 / (sp.x * sp.x);
    const index_t nz = s.nz, plane = s.ny * s.nx;
    std::vector<double> slice_max(static_cast<std::size_t>(nz), 0.0);
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        const float* p = v + 3 * k * plane;
        double m = 0.0, total = 0.0;  // total: NaN once any squared norm is NaN
#pragma omp simd reduction(max : m) reduction(+ : total)
        for (index_t i = 0; i < plane; ++i) {
            const double a = p[3 * i], b = p[3 * i + 1], c = p[3 * i + 2];
            const double n2 = a * a * iz2 + b * b * iy2 + c * c * ix2;
            total += n2;
            m = n2 > m ? n2 : m;
        }
        slice_max[std::size_t(k)] = total == total ? m : std::nan("");
    }
    double best = 0.0;
    for (index_t k = 0; k < nz; ++k) {
        const double x = slice_max[std::size_t(k)];
        if (x != x) return x;
        if (x > best) best = x;
    }
    return std::sqrt(best);
}

// det(I + grad u) per voxel (see demons.hpp), in double; differences times 1 / h.
void jacobian_determinant(const float* u, const Shape3& s, const Spacing3& sp, float* out) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        const index_t kz0 = std::max<index_t>(k - 1, 0), kz1 = std::min(k + 1, nz - 1);
        const double ihz = 1.0 / (kz1 > kz0 ? double(kz1 - kz0) * sp.z : 1.0);
        for (index_t j = 0; j < ny; ++j) {
            const index_t jy0 = std::max<index_t>(j - 1, 0), jy1 = std::min(j + 1, ny - 1);
            const double ihy = 1.0 / (jy1 > jy0 ? double(jy1 - jy0) * sp.y : 1.0);
            const float* zp = u + 3 * s.at(kz1, j, 0);
            const float* zm = u + 3 * s.at(kz0, j, 0);
            const float* yp = u + 3 * s.at(k, jy1, 0);
            const float* ym = u + 3 * s.at(k, jy0, 0);
            const float* row = u + 3 * s.at(k, j, 0);
            float* o = out + s.at(k, j, 0);
            const double cx = 0.5 / sp.x, ex = 1.0 / sp.x;  // 1 / h along x: central, one-sided
            for (index_t i = 0; i < nx; ++i) {
                const index_t ix0 = std::max<index_t>(i - 1, 0), ix1 = std::min(i + 1, nx - 1);
                const double ihx = ix1 - ix0 == 2 ? cx : (ix1 > ix0 ? ex : 1.0);
                const float *a = zp + 3 * i, *b = zm + 3 * i, *c = yp + 3 * i, *d = ym + 3 * i;
                const float *e = row + 3 * ix1, *f = row + 3 * ix0;
                // rows: component (z, y, x); columns: derivative along (z, y, x)
                const double m00 = 1.0 + (double(a[0]) - double(b[0])) * ihz;
                const double m01 = (double(c[0]) - double(d[0])) * ihy;
                const double m02 = (double(e[0]) - double(f[0])) * ihx;
                const double m10 = (double(a[1]) - double(b[1])) * ihz;
                const double m11 = 1.0 + (double(c[1]) - double(d[1])) * ihy;
                const double m12 = (double(e[1]) - double(f[1])) * ihx;
                const double m20 = (double(a[2]) - double(b[2])) * ihz;
                const double m21 = (double(c[2]) - double(d[2])) * ihy;
                const double m22 = 1.0 + (double(e[2]) - double(f[2])) * ihx;
                o[i] = float(m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) +
                             m02 * (m10 * m21 - m11 * m20));
            }
        }
    }
}

}  // namespace ctreg
