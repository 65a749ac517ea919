// Separable Gaussian smoothing (see ctreg/smooth.hpp).
//
// Layout trick: for the z and y passes the components of an interleaved vector field are just
// part of the contiguous inner run (y*x*c for z, x*c for y), so one routine filters "rows of a
// 2-D block" for both, several thousand contiguous floats at a time (vectorised inner loop).
// The x pass pads each line with replicated edge voxels and filters the interleaved line
// with a stride of ncomp, again one contiguous inner loop.  Outputs are accumulated in
// register-sized chunks across the taps; with enough z slices the y and x passes run slice by
// slice while the slice is in cache.  The inner loops are compiled for AVX2 and portable SSE2
// (picked at run time, same float operations).  Every output value is a fixed function of the
// input (no cross-thread reductions): identical on any thread count.
#include "ctreg/smooth.hpp"

#include <cmath>
#include <cstring>

#include "ctreg/warp.hpp"  // simd_dispatch_enabled()

#include "ctreg/simd.hpp"

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

// out[m] = w0 c[m] + sum_q w_q (c[m + q*stride] + c[m - q*stride]) for m in [0, len): the
// symmetric kernel wc[-r..r] pairs its taps.  Chunks of kChunk outputs stay in registers
// across the taps (two loads per tap instead of three loads and a store); every output is the
// same sequence of float operations whatever the chunking.
constexpr index_t kChunk = 32;

// The longest z kernel (in taps each side) that smooth() runs slice by slice (zyx_slices).
constexpr index_t kMaxFusedRadius = 4;

CTREG_ALWAYS_INLINE inline void filter_run(const float* __restrict c, float* __restrict o, index_t len,
                                           index_t stride, const float* __restrict wc, index_t r) {
    const float w0 = wc[0];
    index_t m0 = 0;
    for (; m0 + kChunk <= len; m0 += kChunk) {
        float acc[kChunk];
        for (index_t t = 0; t < kChunk; ++t) acc[t] = w0 * c[m0 + t];
        for (index_t q = 1; q <= r; ++q) {
            const float wq = wc[q];
            const float* a = c + m0 + q * stride;
            const float* z = c + m0 - q * stride;
            for (index_t t = 0; t < kChunk; ++t) acc[t] += wq * (a[t] + z[t]);
        }
        for (index_t t = 0; t < kChunk; ++t) o[m0 + t] = acc[t];
    }
    for (index_t m = m0; m < len; ++m) {
        float acc = w0 * c[m];
        for (index_t q = 1; q <= r; ++q) acc += wc[q] * (c[m + q * stride] + c[m - q * stride]);
        o[m] = acc;
    }
}

// Rows of a column block: bp holds n + 2r padded rows of kBlock floats (bw used); output row
// t goes to d + t * L.
CTREG_ALWAYS_INLINE inline void block_rows_body(const float* __restrict bp, float* __restrict d,
                                                index_t n, index_t L, index_t bw,
                                                const float* __restrict wc, index_t r) {
    for (index_t row = 0; row < n; ++row) filter_run(bp + (row + r) * kBlock, d + row * L, bw, kBlock, wc, r);
}

// One padded line (len = nx * C floats from cen, r * C padding on each side) along x.
CTREG_ALWAYS_INLINE inline void line_body(const float* __restrict cen, float* __restrict o, index_t len,
                                          index_t C, const float* __restrict wc, index_t r) {
    filter_run(cen, o, len, C, wc, r);
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

// One column block [c0, c0 + bw) of n rows of L floats (row stride L): copied with
// replicated edge rows into buf, then filtered into d (so s may equal d).
inline void outer_block(const float* s, float* d, index_t n, index_t L, index_t c0, float* buf,
                        BlockFn rows, const float* wc, index_t r, const float* a = nullptr) {
    const index_t bw = std::min(kBlock, L - c0);
    for (index_t row = -r; row < n + r; ++row) {
        const index_t srow = row < 0 ? 0 : (row >= n ? n - 1 : row);
        float* dst = buf + (row + r) * kBlock;
        const float* src = s + srow * L + c0;
        if (a == nullptr) {
            std::memcpy(dst, src, std::size_t(bw) * sizeof(float));
        } else {  // the addend, summed as the rows are read
            const float* add = a + srow * L + c0;
            for (index_t t = 0; t < bw; ++t) dst[t] = src[t] + add[t];
        }
    }
    rows(buf, d + c0, n, L, bw, wc, r);
}

// One x line of nx voxels with C interleaved components: padded copy in buf, filtered into o.
inline void inner_line(const float* s, float* o, index_t nx, index_t C, float* buf, LineFn filter,
                       const float* wc, index_t r) {
    for (index_t i = 0; i < r; ++i)
        for (index_t c = 0; c < C; ++c) {
            buf[i * C + c] = s[c];
            buf[(r + nx + i) * C + c] = s[(nx - 1) * C + c];
        }
    std::memcpy(buf + r * C, s, std::size_t(nx * C) * sizeof(float));
    filter(buf + r * C, o, nx * C, C, wc, r);
}

// Filter along an axis that is not the fastest one.  The data is nb blocks of n rows of
// L contiguous floats; src may equal dst.
void outer_pass(const float* src, float* dst, index_t nb, index_t n, index_t L,
                const std::vector<float>& w, const float* addend = nullptr) {
    const index_t r = index_t(w.size() / 2);
    const index_t ncol = (L + kBlock - 1) / kBlock;
    const index_t total = nb * ncol;
    const float* wc = w.data() + r;  // wc[q] for q = -r..r; symmetric
    const BlockFn rows = block_fn();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> buf(std::size_t((n + 2 * r) * kBlock));
#pragma omp for schedule(dynamic, 4)
        for (index_t t = 0; t < total; ++t) {
            const index_t b = t / ncol, c0 = (t % ncol) * kBlock;
            outer_block(src + b * n * L, dst + b * n * L, n, L, c0, buf.data(), rows, wc, r,
                        addend ? addend + b * n * L : nullptr);
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
#pragma omp for schedule(dynamic, 16)
        for (index_t row = 0; row < nrows; ++row)
            inner_line(src + row * len, dst + row * len, nx, C, buf.data(), filter, wc, r);
    }
}

// The y and x passes slice by slice, while each z slice is in cache (the same arithmetic as
// outer_pass + inner_pass).  wy or wx may be the identity kernel {1}: that pass is skipped.
// The y and x passes of one slice (y into dst, then x in place), or a copy when neither smooths.
struct YXPasses {
    const Shape3& s;
    index_t C, L, slice, ncol, ry, rx;
    const float* wyc;
    const float* wxc;
    BlockFn rows;
    LineFn filter;
    YXPasses(const Shape3& shape, index_t ncomp, const std::vector<float>& wy, const std::vector<float>& wx)
        : s(shape), C(ncomp), L(shape.nx * ncomp), slice(shape.ny * shape.nx * ncomp),
          ncol((shape.nx * ncomp + kBlock - 1) / kBlock), ry(index_t(wy.size() / 2)),
          rx(index_t(wx.size() / 2)), wyc(wy.data() + wy.size() / 2), wxc(wx.data() + wx.size() / 2),
          rows(block_fn()), filter(line_fn()) {}
    std::vector<float> y_buffer() const { return std::vector<float>(ry > 0 ? std::size_t((s.ny + 2 * ry) * kBlock) : 0); }
    std::vector<float> x_buffer() const { return std::vector<float>(rx > 0 ? std::size_t((s.nx + 2 * rx) * C) : 0); }
    void run(const float* sk, float* dk, float* bufy, float* bufx) const {
        if (ry > 0) {
            for (index_t c = 0; c < ncol; ++c) outer_block(sk, dk, s.ny, L, c * kBlock, bufy, rows, wyc, ry);
            sk = dk;
        }
        if (rx > 0)
            for (index_t j = 0; j < s.ny; ++j) inner_line(sk + j * L, dk + j * L, s.nx, C, bufx, filter, wxc, rx);
        else if (sk != dk)
            std::memcpy(dk, sk, std::size_t(slice) * sizeof(float));
    }
};

void yx_slices(const float* src, float* dst, const Shape3& s, index_t C, const std::vector<float>& wy,
               const std::vector<float>& wx) {
    const YXPasses yx(s, C, wy, wx);
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> bufy = yx.y_buffer(), bufx = yx.x_buffer();
#pragma omp for schedule(dynamic, 1)
        for (index_t k = 0; k < s.nz; ++k) yx.run(src + k * yx.slice, dst + k * yx.slice, bufy.data(), bufx.data());
    }
}

// z pass of one slice from its 2r + 1 neighbours (clamped to the volume: replicated edges),
// into zbuf: the same arithmetic, in the same order, as filter_run on rows copied by
// outer_block, so the result is bit-identical to outer_pass.  up[q] / dn[q] point at slices
// k + q / k - q (q = 0..r) of src and, if given, of the addend (summed first, as outer_block
// does).
CTREG_ALWAYS_INLINE inline void zslice_body(const float* const* up, const float* const* dn,
                                            const float* const* aup, const float* const* adn,
                                            float* __restrict zbuf, index_t len,
                                            const float* __restrict wc, index_t r) {
    const float w0 = wc[0];
    for (index_t m0 = 0; m0 < len; m0 += kChunk) {
        const index_t n = std::min(kChunk, len - m0);
        float acc[kChunk];
        if (aup == nullptr) {
            for (index_t t = 0; t < n; ++t) acc[t] = w0 * up[0][m0 + t];
            for (index_t q = 1; q <= r; ++q) {
                const float wq = wc[q];
                const float* a = up[q] + m0;
                const float* z = dn[q] + m0;
                for (index_t t = 0; t < n; ++t) acc[t] += wq * (a[t] + z[t]);
            }
        } else {
            for (index_t t = 0; t < n; ++t) acc[t] = w0 * (up[0][m0 + t] + aup[0][m0 + t]);
            for (index_t q = 1; q <= r; ++q) {
                const float wq = wc[q];
                const float* a = up[q] + m0;
                const float* z = dn[q] + m0;
                const float* aa = aup[q] + m0;
                const float* az = adn[q] + m0;
                for (index_t t = 0; t < n; ++t) acc[t] += wq * ((a[t] + aa[t]) + (z[t] + az[t]));
            }
        }
        std::memcpy(zbuf + m0, acc, std::size_t(n) * sizeof(float));
    }
}

using ZSliceFn = void (*)(const float* const*, const float* const*, const float* const*,
                          const float* const*, float*, index_t, const float*, index_t);

void zslice_generic(const float* const* up, const float* const* dn, const float* const* aup,
                    const float* const* adn, float* zbuf, index_t len, const float* wc, index_t r) {
    zslice_body(up, dn, aup, adn, zbuf, len, wc, r);
}
#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void zslice_avx2(const float* const* up, const float* const* dn,
                                                 const float* const* aup, const float* const* adn,
                                                 float* zbuf, index_t len, const float* wc, index_t r) {
    zslice_body(up, dn, aup, adn, zbuf, len, wc, r);
}
#endif

ZSliceFn zslice_fn() {
#if CTREG_X86_DISPATCH
    if (use_avx2()) return &zslice_avx2;
#endif
    return &zslice_generic;
}

// All three passes slice by slice: the z pass of slice k into a per-thread buffer (its input
// slices stay in cache for the next k, each thread taking a contiguous run of slices), then
// the y and x passes from that buffer into the output.  The input is read from memory about
// once and the output written once, instead of twice each (z pass, then y/x pass).
void zyx_slices(const float* src, const float* addend, float* dst, const Shape3& s, index_t C,
                const std::vector<float>& wz, const std::vector<float>& wy,
                const std::vector<float>& wx) {
    const index_t rz = index_t(wz.size() / 2);
    const float* wzc = wz.data() + rz;
    const YXPasses yx(s, C, wy, wx);
    const index_t slice = yx.slice;
    const ZSliceFn zpass = zslice_fn();
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> zbuf(static_cast<std::size_t>(slice));
        std::vector<float> bufy = yx.y_buffer(), bufx = yx.x_buffer();
        std::vector<const float*> up(std::size_t(rz + 1)), dn(std::size_t(rz + 1)),
            aup(std::size_t(rz + 1)), adn(std::size_t(rz + 1));
#pragma omp for schedule(static)
        for (index_t k = 0; k < s.nz; ++k) {
            for (index_t q = 0; q <= rz; ++q) {
                const index_t ku = std::min(k + q, s.nz - 1), kd = std::max<index_t>(k - q, 0);
                up[std::size_t(q)] = src + ku * slice;
                dn[std::size_t(q)] = src + kd * slice;
                if (addend) {
                    aup[std::size_t(q)] = addend + ku * slice;
                    adn[std::size_t(q)] = addend + kd * slice;
                }
            }
            zpass(up.data(), dn.data(), addend ? aup.data() : nullptr, addend ? adn.data() : nullptr,
                  zbuf.data(), slice, wzc, rz);
            yx.run(zbuf.data(), dst + k * slice, bufy.data(), bufx.data());
        }
    }
}

std::vector<float> to_float(const std::vector<double>& w) { return std::vector<float>(w.begin(), w.end()); }

}  // namespace

void smooth(const float* array, const Shape3& s, int ncomp, const double sigma_vox[3],
            double truncate, float* out, const float* addend) {
    const std::vector<float> wz = to_float(gaussian_kernel(sigma_vox[0], truncate));
    const std::vector<float> wy = to_float(gaussian_kernel(sigma_vox[1], truncate));
    const std::vector<float> wx = to_float(gaussian_kernel(sigma_vox[2], truncate));
    const index_t C = ncomp;
    const float* src = array;
    // All passes fused slice by slice for short z kernels; a long one reads too many slices per
    // output slice, and the separate z pass streams better there (sigma 2.5 voxels was slower
    // fused on a 79 x 60 x 64 x 3 field, sigma 1 voxel faster).
    if (wz.size() > 1 && wz.size() <= 2 * kMaxFusedRadius + 1 &&
        s.nz >= 4 * index_t(ctreg::num_threads())) {
        zyx_slices(src, addend, out, s, C, wz, wy, wx);
        return;
    }
    if (wz.size() > 1) {
        outer_pass(src, out, 1, s.nz, s.ny * s.nx * C, wz, addend);
        src = out;
    } else if (addend != nullptr) {  // no z pass to fold the sum into: add first
        const index_t per = s.ny * s.nx * C;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
        for (index_t k = 0; k < s.nz; ++k)
            for (index_t t = k * per; t < (k + 1) * per; ++t) out[t] = array[t] + addend[t];
        src = out;
    }
    if ((wy.size() > 1 || wx.size() > 1) && s.nz >= 4 * index_t(ctreg::num_threads())) {
        yx_slices(src, out, s, C, wy, wx);  // enough slices to share: fused, cache-friendly
        src = out;
    } else {
        if (wy.size() > 1) {
            outer_pass(src, out, s.nz, s.ny, s.nx * C, wy);
            src = out;
        }
        if (wx.size() > 1) {
            inner_pass(src, out, s.nz * s.ny, s.nx, ncomp, wx);
            src = out;
        }
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
