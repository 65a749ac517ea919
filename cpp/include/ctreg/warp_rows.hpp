// Internal to the resampling kernels (warp.cpp, warp_compose.cpp); not part of the C++ API.
//
// The row machinery they share: image and field views with the border rules of ctreg/warp.hpp,
// the trilinear cell, and the two stages of an output row (prepare: continuous indices ->
// offsets and weights, vectorised, portable or AVX2 picked at run time; sample: gather and
// interpolate), driven over every output row by for_each_displaced_row / for_each_affine_row.
// Speed notes: warp.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "ctreg/common.hpp"
#include "ctreg/simd.hpp"
#include "ctreg/warp.hpp"

namespace ctreg::warp_rows {

// Points at most this far (in voxels) outside the outermost voxel centres count as on them:
// composing an affine with its inverse leaves round-off of ~1e-13 that would otherwise drop
// the last row of voxels of an identity resampling.
constexpr double kBorderTol = 1e-6;

struct Axis {
    double lo, hi, top;  // inside test [lo, hi]; clamp to [0, top]
    index_t last;        // n - 1: a lower neighbour there has no upper one (weight 0, step 0)
    index_t step;        // stride of the upper neighbour
    Axis() = default;
    Axis(index_t n, index_t stride)
        : lo(-kBorderTol), hi(double(n - 1) + kBorderTol), top(double(n - 1)), last(n - 1),
          step(stride) {}
    // Stride to the upper neighbour of lower index c: 0 on the last voxel, so that an index
    // exactly n - 1 reads that voxel with weight exactly 1 (no v0 + 1 * (v1 - v0) round-off).
    inline index_t upper(index_t c) const { return c < last ? step : 0; }
};

struct Image {
    const float* data;
    Axis az, ay, ax;
    index_t sz, sy;
    index_t uz, uy, ux;  // strides to the upper neighbour of a trilinear cell (0 on an axis of length 1)
    Image(const float* d, const Shape3& s)
        : data(d), az(s.nz, s.ny * s.nx), ay(s.ny, s.nx), ax(s.nx, 1), sz(s.ny * s.nx), sy(s.nx),
          uz(s.nz > 1 ? s.ny * s.nx : 0), uy(s.ny > 1 ? s.nx : 0), ux(s.nx > 1 ? 1 : 0) {}
};

// Trilinear value of the cell whose lower corner is p (upper neighbours at +uz, +uy, +ux) at
// fractions (fz, fy, fx), as (1 - f) v0 + f v1 along x, then y, then z: exact at f = 0 and 1.
CTREG_ALWAYS_INLINE inline float trilinear(const float* p, index_t uz, index_t uy, index_t ux,
                                           float fz, float fy, float fx) {
    const float gz = 1.0f - fz, gy = 1.0f - fy, gx = 1.0f - fx;
    const float c00 = gx * p[0] + fx * p[ux];
    const float c01 = gx * p[uy] + fx * p[uy + ux];
    const float c10 = gx * p[uz] + fx * p[uz + ux];
    const float c11 = gx * p[uz + uy] + fx * p[uz + uy + ux];
    const float c0 = gy * c00 + fy * c01;
    const float c1 = gy * c10 + fy * c11;
    return gz * c0 + fz * c1;
}

// Trilinear interpolation of a (z, y, x, 3) field with its index clamped to the grid.
struct Field {
    const float* data;
    Axis az, ay, ax;
    index_t sz, sy, nx;
    Field(const float* d, const Shape3& s)
        : data(d), az(s.nz, s.ny * s.nx * 3), ay(s.ny, s.nx * 3), ax(s.nx, 3),
          sz(s.ny * s.nx * 3), sy(s.nx * 3), nx(s.nx) {}

    // The field's x line at (clamped) field index (z, y), bilinear in z and y: line (nx, 3).
    inline void line(double z, double y, float* __restrict line) const {
        z = (z >= 0.0) ? (z <= az.top ? z : az.top) : 0.0;
        y = (y >= 0.0) ? (y <= ay.top ? y : ay.top) : 0.0;
        const index_t k = index_t(z), j = index_t(y);
        const float fz = float(z - double(k)), fy = float(y - double(j));
        const float* p00 = data + k * sz + j * sy;
        const float* p01 = p00 + ay.upper(j);
        const float* p10 = p00 + az.upper(k);
        const float* p11 = p10 + ay.upper(j);
        for (index_t m = 0; m < nx * 3; ++m) {
            const float c0 = p00[m] + fy * (p01[m] - p00[m]);
            const float c1 = p10[m] + fy * (p11[m] - p10[m]);
            line[m] = c0 + fz * (c1 - c0);
        }
    }

    // Linear interpolation along a line from line(): (clamped) field x index -> u.
    inline void along(const float* line, double x, float u[3]) const {
        x = (x >= 0.0) ? (x <= ax.top ? x : ax.top) : 0.0;
        const index_t i = index_t(x);
        const float fx = float(x - double(i));
        const float* p = line + 3 * i;
        const index_t dx = ax.upper(i);
        for (int c = 0; c < 3; ++c) u[c] = p[c] + fx * (p[dx + c] - p[c]);
    }

    inline void sample(double z, double y, double x, float u[3]) const {
        // Clamp to [0, n - 1]; a NaN index becomes 0.
        z = (z >= 0.0) ? (z <= az.top ? z : az.top) : 0.0;
        y = (y >= 0.0) ? (y <= ay.top ? y : ay.top) : 0.0;
        x = (x >= 0.0) ? (x <= ax.top ? x : ax.top) : 0.0;
        const index_t k = index_t(z), j = index_t(y), i = index_t(x);
        const float fz = float(z - double(k)), fy = float(y - double(j)), fx = float(x - double(i));
        const float* p = data + k * sz + j * sy + i * 3;
        const index_t dz = az.upper(k), dy = ay.upper(j), dx = ax.upper(i);
        for (int c = 0; c < 3; ++c) {
            const float v000 = p[c], v001 = p[dx + c], v010 = p[dy + c], v011 = p[dy + dx + c];
            const float v100 = p[dz + c], v101 = p[dz + dx + c], v110 = p[dz + dy + c],
                        v111 = p[dz + dy + dx + c];
            const float c00 = v000 + fx * (v001 - v000);
            const float c01 = v010 + fx * (v011 - v010);
            const float c10 = v100 + fx * (v101 - v100);
            const float c11 = v110 + fx * (v111 - v110);
            const float c0 = c00 + fy * (c01 - c00);
            const float c1 = c10 + fy * (c11 - c10);
            u[c] = c0 + fz * (c1 - c0);
        }
    }
};

// One output row in two stages.  Stage 1 (vectorisable, no branches) turns the row's
// continuous indices into a voxel offset (-1 outside the image) and three float weights;
// stage 2 gathers and interpolates.  For trilinear, the lower corner is clamped to n - 2 so
// that the upper neighbour always exists (weight 1 on it at index n - 1), and the weights are
// applied as (1 - f) v0 + f v1, exact at f = 0 and f = 1.
struct RowBuf {
    std::vector<std::int32_t> off;
    std::vector<float> wz, wy, wx;
    explicit RowBuf(index_t n) : off(n), wz(n), wy(n), wx(n) {}
};

// Continuous image index of voxel i of a row: start + i * step (+ w * u[i] with a field).
struct RowGeom {
    double z0, y0, x0, cz, cy, cx;
    double w[3][3];  // world vector -> index step
};

// Offsets are int32 (the binding refuses images of 2^31 voxels or more).
template <int Order, bool HasU>
CTREG_ALWAYS_INLINE inline void prepare_row_body(const Image& img, RowBuf& b, index_t n,
                                                 const RowGeom& g, const float* __restrict u) {
    const double z0 = g.z0, y0 = g.y0, x0 = g.x0, cz = g.cz, cy = g.cy, cx = g.cx;
    const double w00 = g.w[0][0], w01 = g.w[0][1], w02 = g.w[0][2];
    const double w10 = g.w[1][0], w11 = g.w[1][1], w12 = g.w[1][2];
    const double w20 = g.w[2][0], w21 = g.w[2][1], w22 = g.w[2][2];
    std::int32_t* __restrict off = b.off.data();
    float* __restrict wz = b.wz.data();
    float* __restrict wy = b.wy.data();
    float* __restrict wx = b.wx.data();
    const double zlo = img.az.lo, zhi = img.az.hi, ztop = img.az.top;
    const double ylo = img.ay.lo, yhi = img.ay.hi, ytop = img.ay.top;
    const double xlo = img.ax.lo, xhi = img.ax.hi, xtop = img.ax.top;
    // Largest lower corner for trilinear: n - 2 (0 for an axis of length 1).
    const std::int32_t zlow = std::int32_t(std::max<index_t>(img.az.last - 1, 0));
    const std::int32_t ylow = std::int32_t(std::max<index_t>(img.ay.last - 1, 0));
    const std::int32_t xlow = std::int32_t(std::max<index_t>(img.ax.last - 1, 0));
    const std::int32_t sz = std::int32_t(img.sz), sy = std::int32_t(img.sy);
    const std::int32_t n32 = std::int32_t(n);  // int32 -> double converts in SIMD
#pragma omp simd
    for (std::int32_t i = 0; i < n32; ++i) {
        const double di = double(i);
        double z = z0 + di * cz, y = y0 + di * cy, x = x0 + di * cx;
        if constexpr (HasU) {
            const double u0 = u[3 * i], u1 = u[3 * i + 1], u2 = u[3 * i + 2];
            z = z + w00 * u0 + w01 * u1 + w02 * u2;
            y = y + w10 * u0 + w11 * u1 + w12 * u2;
            x = x + w20 * u0 + w21 * u1 + w22 * u2;
        }
        const std::int32_t in = std::int32_t(z >= zlo) & std::int32_t(z <= zhi) & std::int32_t(y >= ylo) &
                                std::int32_t(y <= yhi) & std::int32_t(x >= xlo) & std::int32_t(x <= xhi);
        // Clamped into the grid (a NaN becomes 0; such points are outside anyway).
        const double zz = std::min(std::max(0.0, z), ztop);
        const double yy = std::min(std::max(0.0, y), ytop);
        const double xx = std::min(std::max(0.0, x), xtop);
        std::int32_t k, j, c;
        if constexpr (Order == 0) {
            k = std::int32_t(zz + 0.5);
            j = std::int32_t(yy + 0.5);
            c = std::int32_t(xx + 0.5);
        } else {
            k = std::min(std::int32_t(zz), zlow);
            j = std::min(std::int32_t(yy), ylow);
            c = std::min(std::int32_t(xx), xlow);
            wz[i] = float(zz - double(k));
            wy[i] = float(yy - double(j));
            wx[i] = float(xx - double(c));
        }
        off[i] = (k * sz + j * sy + c) | -(1 - in);  // -1 when outside
    }
}

template <int Order, bool HasU>
void prepare_row_generic(const Image& img, RowBuf& b, index_t n, const RowGeom& g, const float* u) {
    prepare_row_body<Order, HasU>(img, b, n, g, u);
}

#if CTREG_X86_DISPATCH
// The same code compiled for AVX2 (no FMA: identical results to the generic version).
template <int Order, bool HasU>
__attribute__((target("avx2"))) void prepare_row_avx2(const Image& img, RowBuf& b, index_t n,
                                                      const RowGeom& g, const float* u) {
    prepare_row_body<Order, HasU>(img, b, n, g, u);
}
#endif

using PrepareRow = void (*)(const Image&, RowBuf&, index_t, const RowGeom&, const float*);

template <int Order, bool HasU>
PrepareRow select_prepare_row() {
#if CTREG_X86_DISPATCH
    if (use_avx2()) return &prepare_row_avx2<Order, HasU>;
#endif
    return &prepare_row_generic<Order, HasU>;
}

template <int Order>
inline void sample_row(const Image& img, const RowBuf& b, index_t n, float* out, float fill) {
    const std::int32_t* __restrict off = b.off.data();
    const float* __restrict wz = b.wz.data();
    const float* __restrict wy = b.wy.data();
    const float* __restrict wx = b.wx.data();
    const float* data = img.data;
    for (index_t i = 0; i < n; ++i) {
        const std::int32_t o = off[i];
        if (o < 0) {
            out[i] = fill;
            continue;
        }
        const float* p = data + o;
        if constexpr (Order == 0) {
            out[i] = p[0];
        } else {
            out[i] = trilinear(p, img.uz, img.uy, img.ux, wz[i], wy[i], wx[i]);
        }
    }
}

// Prepares every output row of a resampling through (W O q + W u(F q)) and hands it to
// row_fn(k, j, buf): offsets and weights of the row's samples in the image.
template <int Order, class RowFn>
void for_each_displaced_row(const Image& img, const float* field, const Shape3& fs, const Mat4& O,
                            const Mat4& W, const Mat4* F, const Shape3& os, RowFn&& row_fn) {
    const index_t nz = os.nz, ny = os.ny, nx = os.nx;
    const Mat4 A = compose(W, O);  // output index -> image index (without displacement)
    const Field fld(field, fs);
    const PrepareRow prepare = select_prepare_row<Order, true>();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        RowBuf b(nx);
        std::vector<float> ubuf(F ? std::size_t(nx * 3) : 0);
        // A field map without z/y change along an output row (scaling + shift, the usual
        // coarse grid): interpolate the field's line once per row, then only along x.
        const bool by_line = F && F->m[0][2] == 0.0 && F->m[1][2] == 0.0;
        std::vector<float> line(by_line ? std::size_t(fs.nx * 3) : 0);
        RowGeom g{};
        g.cz = A.m[0][2];
        g.cy = A.m[1][2];
        g.cx = A.m[2][2];
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) g.w[r][c] = W.m[r][c];  // W's linear part: u -> index step
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (index_t k = 0; k < nz; ++k) {
            for (index_t j = 0; j < ny; ++j) {
                A.apply(double(k), double(j), 0.0, g.z0, g.y0, g.x0);
                const float* u;
                if (F == nullptr) {
                    u = field + os.at(k, j, 0) * 3;
                } else {
                    double fz0, fy0, fx0;
                    F->apply(double(k), double(j), 0.0, fz0, fy0, fx0);
                    const double fcz = F->m[0][2], fcy = F->m[1][2], fcx = F->m[2][2];
                    if (by_line) {
                        fld.line(fz0, fy0, line.data());
                        for (index_t i = 0; i < nx; ++i)
                            fld.along(line.data(), fx0 + double(i) * fcx, ubuf.data() + 3 * i);
                    } else {
                        for (index_t i = 0; i < nx; ++i) {
                            const double di = double(i);
                            fld.sample(fz0 + di * fcz, fy0 + di * fcy, fx0 + di * fcx, ubuf.data() + 3 * i);
                        }
                    }
                    u = ubuf.data();
                }
                prepare(img, b, nx, g, u);
                row_fn(k, j, b);
            }
        }
    }
}

// The same for an affine map only: output index q -> image index A q.
template <int Order, class RowFn>
void for_each_affine_row(const Image& img, const Mat4& A, const Shape3& os, RowFn&& row_fn) {
    const PrepareRow prepare = select_prepare_row<Order, false>();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        RowBuf b(os.nx);
        RowGeom g{};
        g.cz = A.m[0][2];
        g.cy = A.m[1][2];
        g.cx = A.m[2][2];
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (index_t k = 0; k < os.nz; ++k) {
            for (index_t j = 0; j < os.ny; ++j) {
                A.apply(double(k), double(j), 0.0, g.z0, g.y0, g.x0);
                prepare(img, b, os.nx, g, nullptr);
                row_fn(k, j, b);
            }
        }
    }
}

}  // namespace ctreg::warp_rows
