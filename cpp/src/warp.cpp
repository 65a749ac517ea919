// Resampling kernels: see ctreg/warp.hpp for the contract.
//
// Speed notes: coordinates are computed in double from the row start plus i times the
// matrix column (exact for an affine map, no accumulated drift); interpolation weights and
// values are float.  Each output row is prepared in a branch-free, vectorised pass (compiled
// twice on x86-64: portable and AVX2, picked at run time) and then interpolated.  Rows are
// shared out in dynamic chunks (a core busy with another job does not hold the others up);
// every output voxel depends only on the inputs, so the result does not depend on the thread
// count.
#include "ctreg/warp.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "ctreg/simd.hpp"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace ctreg {
namespace {

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

std::atomic<bool> g_simd_dispatch{true};

template <int Order, bool HasU>
PrepareRow select_prepare_row() {
#if CTREG_X86_DISPATCH
    if (g_simd_dispatch.load(std::memory_order_relaxed) && __builtin_cpu_supports("avx2"))
        return &prepare_row_avx2<Order, HasU>;
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

template <int Order>
void displacement_impl(const Image& img, const float* field, const Shape3& fs, const Mat4& O,
                       const Mat4& W, const Mat4* F, float* out, const Shape3& os, float fill) {
    for_each_displaced_row<Order>(img, field, fs, O, W, F, os, [&](index_t k, index_t j, const RowBuf& b) {
        sample_row<Order>(img, b, os.nx, out + os.at(k, j, 0), fill);
    });
}

// One output row of warp_with_gradient (see warp.hpp).
void sample_row_with_gradient(const Image& img, const float* const grad[3], const RowBuf& b,
                              index_t n, const float lin[3][3], float fill, float valid_min,
                              float invalid_value, float* out, std::uint8_t* valid, float* g) {
    const std::int32_t* __restrict off = b.off.data();
    const float* __restrict wz = b.wz.data();
    const float* __restrict wy = b.wy.data();
    const float* __restrict wx = b.wx.data();
    const float* src[4] = {img.data, grad[0], grad[1], grad[2]};
    for (index_t i = 0; i < n; ++i) {
        const std::int32_t o = off[i];
        float v[4] = {fill, 0.0f, 0.0f, 0.0f};
        if (o >= 0)
            for (int t = 0; t < 4; ++t) v[t] = trilinear(src[t] + o, img.uz, img.uy, img.ux, wz[i], wy[i], wx[i]);
        const bool ok = v[0] >= valid_min;
        out[i] = ok ? v[0] : invalid_value;
        valid[i] = ok ? 1 : 0;
        float* gi = g + 3 * i;
        for (int a = 0; a < 3; ++a) gi[a] = v[1] * lin[0][a] + v[2] * lin[1][a] + v[3] * lin[2][a];
    }
}

// One output row of affine_moments: the row's partial sums in `acc` (kAffineMoments).
void moments_row(const Image& img, const float* const grad[3], const RowBuf& b, index_t n,
                 const float* ref, const std::uint8_t* mask, double k, double j, float valid_min,
                 double* acc) {
    const std::int32_t* __restrict off = b.off.data();
    const float* __restrict wz = b.wz.data();
    const float* __restrict wy = b.wy.data();
    const float* __restrict wx = b.wx.data();
    const float* src[4] = {img.data, grad[0], grad[1], grad[2]};
    double s[6] = {0, 0, 0, 0, 0, 0};
    double sg[3][3] = {{0}}, sgi[3][3] = {{0}};  // sum a_m g_c and sum a_m g_c i (per row)
    for (index_t i = 0; i < n; ++i) {
        const std::int32_t o = off[i];
        if (o < 0 || (mask && !mask[i])) continue;
        float v[4];
        for (int t = 0; t < 4; ++t) v[t] = trilinear(src[t] + o, img.uz, img.uy, img.ux, wz[i], wy[i], wx[i]);
        if (!(v[0] >= valid_min)) continue;
        const double r = ref[i], w = v[0], di = double(i);
        s[0] += 1.0;
        s[1] += r;
        s[2] += w;
        s[3] += r * r;
        s[4] += w * w;
        s[5] += r * w;
        const double a[3] = {r, w, 1.0};
        for (int m = 0; m < 3; ++m)
            for (int c = 0; c < 3; ++c) {
                const double ag = a[m] * double(v[c + 1]);
                sg[m][c] += ag;
                sgi[m][c] += ag * di;
            }
    }
    for (int t = 0; t < 6; ++t) acc[t] = s[t];
    for (int m = 0; m < 3; ++m)
        for (int c = 0; c < 3; ++c) {
            double* base = acc + 6 + 12 * m;
            base[c] = sg[m][c];
            base[3 + 3 * c + 0] = sg[m][c] * k;
            base[3 + 3 * c + 1] = sg[m][c] * j;
            base[3 + 3 * c + 2] = sgi[m][c];
        }
}

}  // namespace

namespace {

// Stage 1 of a composition row (vectorisable, no branches): the clamped sample positions
// (k, j, i) + inner / spacing of row (k, j) as the element offset of their trilinear cell's
// lower corner in the (z, y, x, 3) field and three float weights.  As for images, the lower
// corner is clamped to n - 2 (weight 1 on the upper neighbour at index n - 1); a NaN
// position reads voxel 0.
CTREG_ALWAYS_INLINE inline void prepare_compose_row_body(const Shape3& s, index_t k, index_t j,
                                                         const float* __restrict d,
                                                         const double inv[3], RowBuf& b) {
    std::int32_t* __restrict off = b.off.data();
    float* __restrict wz = b.wz.data();
    float* __restrict wy = b.wy.data();
    float* __restrict wx = b.wx.data();
    const double iz = inv[0], iy = inv[1], ix = inv[2];
    const double ztop = double(s.nz - 1), ytop = double(s.ny - 1), xtop = double(s.nx - 1);
    const std::int32_t zlow = std::int32_t(std::max<index_t>(s.nz - 2, 0));
    const std::int32_t ylow = std::int32_t(std::max<index_t>(s.ny - 2, 0));
    const std::int32_t xlow = std::int32_t(std::max<index_t>(s.nx - 2, 0));
    const std::int32_t sz = std::int32_t(s.ny * s.nx * 3), sy = std::int32_t(s.nx * 3);
    const double kz = double(k), jy = double(j);
    const std::int32_t n32 = std::int32_t(s.nx);
#pragma omp simd
    for (std::int32_t i = 0; i < n32; ++i) {
        const double z = kz + double(d[3 * i]) * iz;
        const double y = jy + double(d[3 * i + 1]) * iy;
        const double x = double(i) + double(d[3 * i + 2]) * ix;
        const double zz = std::min(std::max(0.0, z), ztop);  // std::max(0.0, NaN) is 0.0
        const double yy = std::min(std::max(0.0, y), ytop);
        const double xx = std::min(std::max(0.0, x), xtop);
        const std::int32_t kk = std::min(std::int32_t(zz), zlow);
        const std::int32_t jj = std::min(std::int32_t(yy), ylow);
        const std::int32_t ii = std::min(std::int32_t(xx), xlow);
        wz[i] = float(zz - double(kk));
        wy[i] = float(yy - double(jj));
        wx[i] = float(xx - double(ii));
        off[i] = kk * sz + jj * sy + ii * 3;
    }
}

void prepare_compose_row_generic(const Shape3& s, index_t k, index_t j, const float* d,
                                 const double inv[3], RowBuf& b) {
    prepare_compose_row_body(s, k, j, d, inv, b);
}

#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void prepare_compose_row_avx2(const Shape3& s, index_t k, index_t j,
                                                               const float* d, const double inv[3],
                                                               RowBuf& b) {
    prepare_compose_row_body(s, k, j, d, inv, b);
}
#endif


// Stage 2 of a composition row: o[i] = d[i] + outer(cell of i), the three components at once
// from 4-float loads of each corner (the fourth lane is the next vector's first component,
// unused); the cell at the very end of the field takes the scalar path, to read nothing past it.
struct ComposeCells {
    index_t uz, uy, ux;  // strides to the upper neighbour of a cell, in floats (0 on an axis of length 1)
    index_t top_corner, total;
    explicit ComposeCells(const Shape3& s)
        : uz(s.nz > 1 ? s.ny * s.nx * 3 : 0), uy(s.ny > 1 ? s.nx * 3 : 0), ux(s.nx > 1 ? 3 : 0),
          top_corner(uz + uy + ux), total(s.size() * 3) {}
};

inline void compose_row(const float* outer, const ComposeCells& cell, const RowBuf& b,
                        const float* __restrict d, float* __restrict o, index_t nx) {
    const index_t uz = cell.uz, uy = cell.uy, ux = cell.ux;
    const index_t top_corner = cell.top_corner, total = cell.total;
    const std::int32_t* __restrict off = b.off.data();
    const float* __restrict wz = b.wz.data();
    const float* __restrict wy = b.wy.data();
    const float* __restrict wx = b.wx.data();
    for (index_t i = 0; i < nx; ++i) {
        const float* p = outer + off[i];
        const float fz = wz[i], fy = wy[i], fx = wx[i];
#if defined(__SSE2__)
        if (off[i] + top_corner + 4 <= total) {
            const __m128 gx = _mm_set1_ps(1.0f - fx), fxv = _mm_set1_ps(fx);
            const __m128 gy = _mm_set1_ps(1.0f - fy), fyv = _mm_set1_ps(fy);
            const __m128 gz = _mm_set1_ps(1.0f - fz), fzv = _mm_set1_ps(fz);
            auto lerp = [](__m128 g, __m128 f, __m128 a, __m128 b) {
                return _mm_add_ps(_mm_mul_ps(g, a), _mm_mul_ps(f, b));
            };
            const __m128 c00 = lerp(gx, fxv, _mm_loadu_ps(p), _mm_loadu_ps(p + ux));
            const __m128 c01 = lerp(gx, fxv, _mm_loadu_ps(p + uy), _mm_loadu_ps(p + uy + ux));
            const __m128 c10 = lerp(gx, fxv, _mm_loadu_ps(p + uz), _mm_loadu_ps(p + uz + ux));
            const __m128 c11 =
                lerp(gx, fxv, _mm_loadu_ps(p + uz + uy), _mm_loadu_ps(p + uz + uy + ux));
            const __m128 v = lerp(gz, fzv, lerp(gy, fyv, c00, c01), lerp(gy, fyv, c10, c11));
            alignas(16) float a[4];
            _mm_store_ps(a, v);
            o[3 * i] = d[3 * i] + a[0];
            o[3 * i + 1] = d[3 * i + 1] + a[1];
            o[3 * i + 2] = d[3 * i + 2] + a[2];
            continue;
        }
#endif
        o[3 * i] = d[3 * i] + trilinear(p, uz, uy, ux, fz, fy, fx);
        o[3 * i + 1] = d[3 * i + 1] + trilinear(p + 1, uz, uy, ux, fz, fy, fx);
        o[3 * i + 2] = d[3 * i + 2] + trilinear(p + 2, uz, uy, ux, fz, fy, fx);
    }
}

using PrepareComposeRow = void (*)(const Shape3&, index_t, index_t, const float*, const double*, RowBuf&);

PrepareComposeRow select_prepare_compose_row() {
#if CTREG_X86_DISPATCH
    if (g_simd_dispatch.load(std::memory_order_relaxed) && __builtin_cpu_supports("avx2"))
        return &prepare_compose_row_avx2;
#endif
    return &prepare_compose_row_generic;
}

void check_field_offsets(const Shape3& s) {
    if (s.size() * 3 > index_t(INT32_MAX))
        throw std::invalid_argument("a displacement field must have fewer than 2^31 / 3 voxels");
}

}  // namespace

void compose_fields(const float* outer, const float* inner, const Shape3& s,
                    const Spacing3& sp, float* out) {
    check_field_offsets(s);
    const double inv[3] = {1.0 / sp.z, 1.0 / sp.y, 1.0 / sp.x};
    const ComposeCells cell(s);
    const PrepareComposeRow prepare = select_prepare_compose_row();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        RowBuf b(s.nx);
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (index_t k = 0; k < s.nz; ++k) {
            for (index_t j = 0; j < s.ny; ++j) {
                const index_t at = s.at(k, j, 0) * 3;
                prepare(s, k, j, inner + at, inv, b);
                compose_row(outer, cell, b, inner + at, out + at, s.nx);
            }
        }
    }
}

void resample_composed(const float* image, const Shape3& in, const float* inner,
                       const float* outer, const Shape3& fs, const Spacing3& sp,
                       const Mat4& out_to_world, const Mat4& world_to_image, float* out,
                       float fill, std::uint8_t* valid, float valid_min, float invalid_value) {
    check_field_offsets(fs);
    const Image img(image, in);
    const Mat4 A = compose(world_to_image, out_to_world);  // output index -> image index
    const double inv[3] = {1.0 / sp.z, 1.0 / sp.y, 1.0 / sp.x};
    const ComposeCells cell(fs);
    const PrepareComposeRow prepare_u = select_prepare_compose_row();
    const PrepareRow prepare = select_prepare_row<1, true>();
    const index_t nx = fs.nx;
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        RowBuf cb(nx), b(nx);
        std::vector<float> u(std::size_t(nx * 3));
        RowGeom g{};
        g.cz = A.m[0][2];
        g.cy = A.m[1][2];
        g.cx = A.m[2][2];
        for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) g.w[r][c] = world_to_image.m[r][c];
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (index_t k = 0; k < fs.nz; ++k) {
            for (index_t j = 0; j < fs.ny; ++j) {
                const index_t at = fs.at(k, j, 0);
                // the row of the composed displacement, exactly as compose_fields writes it
                prepare_u(fs, k, j, inner + 3 * at, inv, cb);
                compose_row(outer, cell, cb, inner + 3 * at, u.data(), nx);
                A.apply(double(k), double(j), 0.0, g.z0, g.y0, g.x0);
                prepare(img, b, nx, g, u.data());
                sample_row<1>(img, b, nx, out + at, fill);
                if (valid) {
                    float* o = out + at;
                    std::uint8_t* v = valid + at;
                    for (index_t i = 0; i < nx; ++i) {
                        const bool ok = o[i] >= valid_min;  // false for NaN
                        o[i] = ok ? o[i] : invalid_value;
                        v[i] = ok ? 1 : 0;
                    }
                }
            }
        }
    }
}

void resample_field(const float* field, const Shape3& fs, const double step[3],
                    const double first[3], float* out, const Shape3& os) {
    const Field fld(field, fs);
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> line(std::size_t(fs.nx * 3));
#pragma omp for collapse(2) schedule(static)
        for (index_t k = 0; k < os.nz; ++k) {
            for (index_t j = 0; j < os.ny; ++j) {
                // the field's x line at this output row (bilinear in z and y), then along x
                fld.line(first[0] + double(k) * step[0], first[1] + double(j) * step[1], line.data());
                float* o = out + os.at(k, j, 0) * 3;
                for (index_t i = 0; i < os.nx; ++i)
                    fld.along(line.data(), first[2] + double(i) * step[2], o + 3 * i);
            }
        }
    }
}

void affine_moments(const float* image, const Shape3& in, const float* const grad[3],
                    const float* reference, const std::uint8_t* mask, const Shape3& os,
                    const Mat4& A, float valid_min, double* out) {
    const Image img(image, in);
    const index_t nz = os.nz, ny = os.ny, nx = os.nx;
    std::vector<double> rows(std::size_t(nz * ny) * kAffineMoments, 0.0);
    const PrepareRow prepare = select_prepare_row<1, false>();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        RowBuf b(nx);
        RowGeom g{};
        g.cz = A.m[0][2];
        g.cy = A.m[1][2];
        g.cx = A.m[2][2];
#pragma omp for collapse(2) schedule(dynamic, 16)
        for (index_t k = 0; k < nz; ++k) {
            for (index_t j = 0; j < ny; ++j) {
                const index_t at = os.at(k, j, 0);
                if (mask) {  // skip rows with nothing to count
                    bool any = false;
                    for (index_t i = 0; i < nx && !any; ++i) any = mask[at + i] != 0;
                    if (!any) continue;
                }
                A.apply(double(k), double(j), 0.0, g.z0, g.y0, g.x0);
                prepare(img, b, nx, g, nullptr);
                moments_row(img, grad, b, nx, reference + at, mask ? mask + at : nullptr, double(k),
                            double(j), valid_min, rows.data() + (k * ny + j) * kAffineMoments);
            }
        }
    }
    for (int t = 0; t < kAffineMoments; ++t) out[t] = 0.0;
    for (index_t r = 0; r < nz * ny; ++r)
        for (int t = 0; t < kAffineMoments; ++t) out[t] += rows[std::size_t(r) * kAffineMoments + t];
}

void warp_with_gradient(const float* image, const float* const grad[3], const Shape3& in,
                        const float* field, const Mat4& out_to_world, const Mat4& world_to_image,
                        float fill, float valid_min, float invalid_value, float* out,
                        std::uint8_t* valid, float* out_grad, const Shape3& os) {
    const Image img(image, in);
    float lin[3][3];  // world (frame) vector -> image index step, as float32
    for (int r = 0; r < 3; ++r)
        for (int c = 0; c < 3; ++c) lin[r][c] = float(world_to_image.m[r][c]);
    auto row = [&](index_t k, index_t j, const RowBuf& b) {
        const index_t at = os.at(k, j, 0);
        sample_row_with_gradient(img, grad, b, os.nx, lin, fill, valid_min, invalid_value,
                                 out + at, valid + at, out_grad + 3 * at);
    };
    if (field)
        for_each_displaced_row<1>(img, field, os, out_to_world, world_to_image, nullptr, os, row);
    else
        for_each_affine_row<1>(img, compose(world_to_image, out_to_world), os, row);
}

bool set_simd_dispatch(bool enabled) { return g_simd_dispatch.exchange(enabled); }
bool simd_dispatch_enabled() { return g_simd_dispatch.load(std::memory_order_relaxed); }

Mat4 compose(const Mat4& a, const Mat4& b) {
    Mat4 r;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            double s = 0.0;
            for (int t = 0; t < 4; ++t) s += a.m[i][t] * b.m[t][j];
            r.m[i][j] = s;
        }
    return r;
}

void resample_affine(const float* image, const Shape3& in, const Mat4& out_to_in, float* out,
                     const Shape3& out_shape, int order, float fill) {
    const Image img(image, in);
    if (order == 0)
        for_each_affine_row<0>(img, out_to_in, out_shape, [&](index_t k, index_t j, const RowBuf& b) {
            sample_row<0>(img, b, out_shape.nx, out + out_shape.at(k, j, 0), fill);
        });
    else
        for_each_affine_row<1>(img, out_to_in, out_shape, [&](index_t k, index_t j, const RowBuf& b) {
            sample_row<1>(img, b, out_shape.nx, out + out_shape.at(k, j, 0), fill);
        });
}

void resample_displacement(const float* image, const Shape3& in, const float* field,
                           const Shape3& fs, const Mat4& out_to_world, const Mat4& world_to_image,
                           const Mat4* field_from_out, float* out, const Shape3& out_shape,
                           int order, float fill) {
    const Image img(image, in);
    if (order == 0)
        displacement_impl<0>(img, field, fs, out_to_world, world_to_image, field_from_out, out,
                             out_shape, fill);
    else
        displacement_impl<1>(img, field, fs, out_to_world, world_to_image, field_from_out, out,
                             out_shape, fill);
}

}  // namespace ctreg
