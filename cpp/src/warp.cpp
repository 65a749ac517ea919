// Resampling kernels: see ctreg/warp.hpp for the contract.  The row machinery they share with
// the field composition (warp_compose.cpp) is in ctreg/warp_rows.hpp.
//
// Speed notes: coordinates are computed in double from the row start plus i times the
// matrix column (exact for an affine map, no accumulated drift); interpolation weights and
// values are float.  Each output row is prepared in a branch-free, vectorised pass (compiled
// twice on x86-64: portable and AVX2, picked at run time) and then interpolated.  Rows are
// shared out in dynamic chunks (a core busy with another job does not hold the others up);
// every output voxel depends only on the inputs, so the result does not depend on the thread
// count.
#include "ctreg/warp.hpp"

#include <atomic>
#include <cstdint>
#include <vector>

#include "ctreg/warp_rows.hpp"

namespace ctreg {

using namespace warp_rows;

namespace {

std::atomic<bool> g_simd_dispatch{true};

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
