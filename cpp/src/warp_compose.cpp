// Composition of displacement fields (ctreg/warp.hpp): compose_fields, resample_composed (a
// resampling through a composition, without writing it) and resample_field.  The row machinery
// shared with the resampling kernels (warp.cpp) is in ctreg/warp_rows.hpp.  Every output voxel
// depends only on the inputs, so the result does not depend on the thread count.
#include "ctreg/warp.hpp"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "ctreg/simd.hpp"
#include "ctreg/warp_rows.hpp"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace ctreg {

using namespace warp_rows;

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
    if (use_avx2()) return &prepare_compose_row_avx2;
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

}  // namespace ctreg
