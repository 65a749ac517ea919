// Pointwise field kernels; see ctreg/fields.hpp.
#include "ctreg/fields.hpp"

#include <cmath>
#include <limits>
#include <vector>

namespace ctreg {
namespace {

// Lower index, upper index and weight of the upper one for a clamped position f (as
// _kernels._clamp_axis: NaN and negatives go to 0, beyond the top to the top).
inline void clamp_axis(double f, index_t n, index_t& i0, index_t& i1, double& w) {
    const index_t top = n - 1;
    if (f > double(top)) f = double(top);
    if (!(f > 0.0)) f = 0.0;
    i0 = index_t(std::floor(f));
    if (i0 > top) i0 = top;
    if (i0 < 0) i0 = 0;
    i1 = i0 + 1;
    if (i1 > top) i1 = top;
    w = f - double(i0);
}

}  // namespace

void scale_field(const float* v, const Shape3& s, double factor, float* out) {
    const index_t nz = s.nz, plane = 3 * s.ny * s.nx;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        const float* p = v + k * plane;
        float* o = out + k * plane;
#pragma omp simd
        for (index_t i = 0; i < plane; ++i) o[i] = float(double(p[i]) * factor);
    }
}

void affine_field(const float* u, const Shape3& s, const double* vec, const double* idx, float* out) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t kp = 0; kp < nz; ++kp) {
        const double k = double(kp);
        for (index_t j = 0; j < ny; ++j) {
            const double fj = double(j);
            const double b0 = idx[0] * k + idx[1] * fj + idx[3];
            const double b1 = idx[4] * k + idx[5] * fj + idx[7];
            const double b2 = idx[8] * k + idx[9] * fj + idx[11];
            const float* row = u + 3 * s.at(kp, j, 0);
            float* o = out + 3 * s.at(kp, j, 0);
            for (index_t i = 0; i < nx; ++i) {
                const double fi = double(i);
                const double u0 = row[3 * i], u1 = row[3 * i + 1], u2 = row[3 * i + 2];
                o[3 * i] = float(vec[0] * u0 + vec[1] * u1 + vec[2] * u2 + (b0 + idx[2] * fi));
                o[3 * i + 1] = float(vec[3] * u0 + vec[4] * u1 + vec[5] * u2 + (b1 + idx[6] * fi));
                o[3 * i + 2] = float(vec[6] * u0 + vec[7] * u1 + vec[8] * u2 + (b2 + idx[10] * fi));
            }
        }
    }
}

double invert_step(const float* u, const float* v, const Shape3& s, const Spacing3& sp, float* out) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    std::vector<double> slice_max(static_cast<std::size_t>(nz), 0.0);
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        double m = 0.0;
        for (index_t j = 0; j < ny; ++j) {
            for (index_t i = 0; i < nx; ++i) {
                const index_t q = 3 * s.at(k, j, i);
                const double d0 = v[q], d1 = v[q + 1], d2 = v[q + 2];
                index_t z0, z1, y0, y1, x0, x1;
                double wz, wy, wx;
                clamp_axis(double(k) + d0 / sp.z, nz, z0, z1, wz);
                clamp_axis(double(j) + d1 / sp.y, ny, y0, y1, wy);
                clamp_axis(double(i) + d2 / sp.x, nx, x0, x1, wx);
                double a0 = 0.0, a1 = 0.0, a2 = 0.0;
                for (int cz = 0; cz < 2; ++cz) {
                    const index_t zz = cz ? z1 : z0;
                    const double w_z = cz ? wz : 1.0 - wz;
                    for (int cy = 0; cy < 2; ++cy) {
                        const index_t yy = cy ? y1 : y0;
                        const double w_zy = w_z * (cy ? wy : 1.0 - wy);
                        for (int cx = 0; cx < 2; ++cx) {
                            const index_t xx = cx ? x1 : x0;
                            const double w = w_zy * (cx ? wx : 1.0 - wx);
                            const float* c = u + 3 * s.at(zz, yy, xx);
                            a0 += w * c[0];
                            a1 += w * c[1];
                            a2 += w * c[2];
                        }
                    }
                }
                const float n0 = float(-a0), n1 = float(-a1), n2 = float(-a2);
                out[q] = n0;
                out[q + 1] = n1;
                out[q + 2] = n2;
                const double e0 = double(n0) - d0, e1 = double(n1) - d1, e2 = double(n2) - d2;
                const double e = std::sqrt(e0 * e0 + e1 * e1 + e2 * e2);
                if (e > m) m = e;
            }
        }
        slice_max[std::size_t(k)] = m;
    }
    double best = 0.0;
    for (index_t k = 0; k < nz; ++k)
        if (slice_max[std::size_t(k)] > best) best = slice_max[std::size_t(k)];
    return best;
}

void jacobian_stats(const float* jac, const Shape3& s, const std::uint8_t* mask, double* out7) {
    const index_t nz = s.nz, plane = s.ny * s.nx;
    std::vector<double> part(static_cast<std::size_t>(7 * nz));
    const double inf = std::numeric_limits<double>::infinity();
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        double n = 0.0, lo = inf, hi = -inf, nonpos = 0.0, pos = 0.0, s1 = 0.0, s2 = 0.0;
        const float* p = jac + k * plane;
        const std::uint8_t* mk = mask ? mask + k * plane : nullptr;
        for (index_t i = 0; i < plane; ++i) {
            if (mk && !mk[i]) continue;
            const double v = p[i];
            n += 1.0;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
            if (v > 0.0) {
                pos += 1.0;
                const double lv = std::log(v);
                s1 += lv;
                s2 += lv * lv;
            } else if (v <= 0.0) {
                nonpos += 1.0;
            }
        }
        double* o = part.data() + 7 * k;
        o[0] = n; o[1] = lo; o[2] = hi; o[3] = nonpos; o[4] = pos; o[5] = s1; o[6] = s2;
    }
    out7[0] = 0.0; out7[1] = inf; out7[2] = -inf;
    for (int c = 3; c < 7; ++c) out7[c] = 0.0;
    for (index_t k = 0; k < nz; ++k) {
        const double* o = part.data() + 7 * k;
        out7[0] += o[0];
        out7[1] = std::min(out7[1], o[1]);
        out7[2] = std::max(out7[2], o[2]);
        for (int c = 3; c < 7; ++c) out7[c] += o[c];
    }
}

void jacobian_stats_pair(const float* jac, const Shape3& s, const std::uint8_t* mask, double* out14,
                         bool accumulate) {
    // jacobian_stats(jac, s, nullptr) and jacobian_stats(jac, s, mask) in one pass: each log J
    // is taken once, and each set of sums is accumulated in the same order as alone.  With
    // accumulate, the slices' sums are added onto out14 in the same order: a map given slab by
    // slab in z order gets the whole map's values bit for bit.
    const index_t nz = s.nz, plane = s.ny * s.nx;
    std::vector<double> part(static_cast<std::size_t>(14 * nz));
    const double inf = std::numeric_limits<double>::infinity();
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        double a[7] = {0.0, inf, -inf, 0.0, 0.0, 0.0, 0.0};
        double b[7] = {0.0, inf, -inf, 0.0, 0.0, 0.0, 0.0};
        const float* p = jac + k * plane;
        const std::uint8_t* mk = mask + k * plane;
        for (index_t i = 0; i < plane; ++i) {
            const double v = p[i];
            const bool in = mk[i] != 0;
            a[0] += 1.0;
            if (v < a[1]) a[1] = v;
            if (v > a[2]) a[2] = v;
            if (in) {
                b[0] += 1.0;
                if (v < b[1]) b[1] = v;
                if (v > b[2]) b[2] = v;
            }
            if (v > 0.0) {
                const double lv = std::log(v);
                a[4] += 1.0;
                a[5] += lv;
                a[6] += lv * lv;
                if (in) {
                    b[4] += 1.0;
                    b[5] += lv;
                    b[6] += lv * lv;
                }
            } else if (v <= 0.0) {
                a[3] += 1.0;
                if (in) b[3] += 1.0;
            }
        }
        double* o = part.data() + 14 * k;
        for (int c = 0; c < 7; ++c) {
            o[c] = a[c];
            o[7 + c] = b[c];
        }
    }
    for (int h = 0; h < 2; ++h) {
        double* r = out14 + 7 * h;
        if (!accumulate) {
            r[0] = 0.0; r[1] = inf; r[2] = -inf;
            for (int c = 3; c < 7; ++c) r[c] = 0.0;
        }
        for (index_t k = 0; k < nz; ++k) {
            const double* o = part.data() + 14 * k + 7 * h;
            r[0] += o[0];
            r[1] = std::min(r[1], o[1]);
            r[2] = std::max(r[2], o[2]);
            for (int c = 3; c < 7; ++c) r[c] += o[c];
        }
    }
}

void clip_fill(const float* image, const Shape3& s, const std::uint8_t* valid, float lo, float hi,
               float fill, float* out) {
    const index_t nz = s.nz, plane = s.ny * s.nx;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        const float* p = image + k * plane;
        float* o = out + k * plane;
        const std::uint8_t* v = valid ? valid + k * plane : nullptr;
        for (index_t i = 0; i < plane; ++i) {
            float x = p[i];
            if (x < lo) x = lo;
            if (x > hi) x = hi;
            o[i] = (v && !v[i]) ? fill : x;
        }
    }
}

}  // namespace ctreg
