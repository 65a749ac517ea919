// Separable Gaussian smoothing (see ctreg/smooth.hpp).
//
// Layout trick: for the z and y passes the components of an interleaved vector field are just
// part of the contiguous inner run (y*x*c for z, x*c for y), so one routine filters "rows of a
// 2-D block" for both, several thousand contiguous floats at a time (vectorised inner loop).
// The x pass pads each line with replicated edge voxels and filters the interleaved line
// with a stride of ncomp, again one contiguous inner loop.  Every output value is a fixed
// function of the input (no cross-thread reductions): identical on any thread count.
#include "ctreg/smooth.hpp"

#include <cmath>
#include <cstring>

#include "ctreg/warp.hpp"  // simd_dispatch_enabled()

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CTREG_X86_DISPATCH 1
#define CTREG_ALWAYS_INLINE __attribute__((always_inline))
#else
#define CTREG_X86_DISPATCH 0
#define CTREG_ALWAYS_INLINE
#endif

namespace ctreg {

std::vector<double> gaussian_kernel(double sigma, double truncate) {
    if (!(sigma > 0.0)) return {1.0};
    const int radius = int(truncate * sigma + 0.5);
    if (radius <= 0) return {1.0};
    std::vector<double> w(2 * radius + 1);
    const double c = -0.5 / (sigma * sigma);
    double sum = 0.0;
    for (int x = -radius; x <= radius; ++x) {
        w[x + radius] = std::exp(c * double(x) * double(x));
        sum += w[x + radius];
    }
    for (double& v : w) v /= sum;
    return w;
}

namespace {

constexpr index_t kBlock = 256;  // floats per column block of the z / y passes

// Rows of a column block: bp holds n + 2r padded rows of kBlock floats (bw used); output row
// t goes to d + t * L.  The symmetric kernel wc[-r..r] pairs the taps: w_q (a + b).
CTREG_ALWAYS_INLINE inline void block_rows_body(const float* __restrict bp, float* __restrict d,
                                                index_t n, index_t L, index_t bw,
                                                const float* __restrict wc, index_t r) {
    for (index_t row = 0; row < n; ++row) {
        const float* c = bp + (row + r) * kBlock;
        float* __restrict o = d + row * L;
        const float w0 = wc[0];
        for (index_t m = 0; m < bw; ++m) o[m] = w0 * c[m];
        for (index_t q = 1; q <= r; ++q) {
            const float wq = wc[q];
            const float* a = c + q * kBlock;
            const float* z = c - q * kBlock;
            for (index_t m = 0; m < bw; ++m) o[m] += wq * (a[m] + z[m]);
        }
    }
}

// One padded line (len = nx * C floats from cen, r * C padding on each side) along x.
CTREG_ALWAYS_INLINE inline void line_body(const float* __restrict cen, float* __restrict o, index_t len,
                                          index_t C, const float* __restrict wc, index_t r) {
    const float w0 = wc[0];
    for (index_t m = 0; m < len; ++m) o[m] = w0 * cen[m];
    for (index_t q = 1; q <= r; ++q) {
        const float wq = wc[q];
        const float* a = cen + q * C;
        const float* z = cen - q * C;
        for (index_t m = 0; m < len; ++m) o[m] += wq * (a[m] + z[m]);
    }
}

using BlockFn = void (*)(const float*, float*, index_t, index_t, index_t, const float*, index_t);
using LineFn = void (*)(const float*, float*, index_t, index_t, const float*, index_t);

void block_rows_generic(const float* bp, float* d, index_t n, index_t L, index_t bw, const float* wc,
                        index_t r) {
    block_rows_body(bp, d, n, L, bw, wc, r);
}
void line_generic(const float* cen, float* o, index_t len, index_t C, const float* wc, index_t r) {
    line_body(cen, o, len, C, wc, r);
}
#if CTREG_X86_DISPATCH
// The same loops for AVX2 (no FMA: each output is the same sequence of float operations).
__attribute__((target("avx2"))) void block_rows_avx2(const float* bp, float* d, index_t n, index_t L,
                                                      index_t bw, const float* wc, index_t r) {
    block_rows_body(bp, d, n, L, bw, wc, r);
}
__attribute__((target("avx2"))) void line_avx2(const float* cen, float* o, index_t len, index_t C,
                                               const float* wc, index_t r) {
    line_body(cen, o, len, C, wc, r);
}
#endif

bool use_avx2() {
#if CTREG_X86_DISPATCH
    return simd_dispatch_enabled() && __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

BlockFn block_fn() {
#if CTREG_X86_DISPATCH
    if (use_avx2()) return &block_rows_avx2;
#endif
    return &block_rows_generic;
}
LineFn line_fn() {
#if CTREG_X86_DISPATCH
    if (use_avx2()) return &line_avx2;
#endif
    return &line_generic;
}

// Filter along an axis that is not the fastest one.  The data is nb blocks of n rows of
// L contiguous floats; src may equal dst (each column block is copied out first).
void outer_pass(const float* src, float* dst, index_t nb, index_t n, index_t L,
                const std::vector<float>& w) {
    const index_t r = index_t(w.size() / 2);
    const index_t ncol = (L + kBlock - 1) / kBlock;
    const index_t total = nb * ncol;
    const float* wc = w.data() + r;  // wc[q] for q = -r..r; symmetric
    const BlockFn rows = block_fn();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> buf(std::size_t((n + 2 * r) * kBlock));
#pragma omp for schedule(static)
        for (index_t t = 0; t < total; ++t) {
            const index_t b = t / ncol, c0 = (t % ncol) * kBlock;
            const index_t bw = std::min(kBlock, L - c0);
            const float* s = src + b * n * L + c0;
            float* d = dst + b * n * L + c0;
            float* bp = buf.data();
            for (index_t row = -r; row < n + r; ++row) {
                const index_t srow = row < 0 ? 0 : (row >= n ? n - 1 : row);
                std::memcpy(bp + (row + r) * kBlock, s + srow * L, std::size_t(bw) * sizeof(float));
            }
            rows(bp, d, n, L, bw, wc, r);
        }
    }
}

// Filter along the fastest axis: nrows lines of nx voxels with ncomp interleaved components.
void inner_pass(const float* src, float* dst, index_t nrows, index_t nx, int ncomp,
                const std::vector<float>& w) {
    const index_t r = index_t(w.size() / 2);
    const index_t C = ncomp, len = nx * C;
    const float* wc = w.data() + r;
    const LineFn filter = line_fn();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> buf(std::size_t((nx + 2 * r) * C));
#pragma omp for schedule(static)
        for (index_t row = 0; row < nrows; ++row) {
            const float* s = src + row * len;
            float* o = dst + row * len;
            float* bp = buf.data();
            for (index_t i = 0; i < r; ++i)
                for (index_t c = 0; c < C; ++c) {
                    bp[i * C + c] = s[c];
                    bp[(r + nx + i) * C + c] = s[(nx - 1) * C + c];
                }
            std::memcpy(bp + r * C, s, std::size_t(len) * sizeof(float));
            filter(bp + r * C, o, len, C, wc, r);
        }
    }
}

std::vector<float> to_float(const std::vector<double>& w) { return std::vector<float>(w.begin(), w.end()); }

}  // namespace

void smooth(const float* array, const Shape3& s, int ncomp, const double sigma_vox[3],
            double truncate, float* out) {
    const std::vector<float> wz = to_float(gaussian_kernel(sigma_vox[0], truncate));
    const std::vector<float> wy = to_float(gaussian_kernel(sigma_vox[1], truncate));
    const std::vector<float> wx = to_float(gaussian_kernel(sigma_vox[2], truncate));
    const index_t C = ncomp;
    const float* src = array;
    if (wz.size() > 1) {
        outer_pass(src, out, 1, s.nz, s.ny * s.nx * C, wz);
        src = out;
    }
    if (wy.size() > 1) {
        outer_pass(src, out, s.nz, s.ny, s.nx * C, wy);
        src = out;
    }
    if (wx.size() > 1) {
        inner_pass(src, out, s.nz * s.ny, s.nx, ncomp, wx);
        src = out;
    }
    if (src != out) {
        const index_t total = s.size() * C;
        // Chunked parallel copy (no smoothing requested on any axis).
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
        for (index_t k = 0; k < s.nz; ++k) {
            const index_t per = total / s.nz;
            std::memcpy(out + k * per, array + k * per, std::size_t(per) * sizeof(float));
        }
    }
}

}  // namespace ctreg
