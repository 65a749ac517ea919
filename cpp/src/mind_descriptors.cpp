// MIND-SSC descriptors (ctreg/mind.hpp); the block-matching costs and the coupled-convex argmin
// are in mind_match.cpp.
//
// Determinism: every output value is computed by one thread from its inputs by a fixed
// sequence of float operations (no atomics, no cross-thread float reductions; the one global
// sum, mean(V) of MIND-SSC, is summed per slice in double and the slice sums in slice order).
// Results are identical for any thread count.  The inner loops are compiled for AVX2 and
// portable SSE2 (picked at run time, no FMA: the same float operations).
#include "ctreg/mind.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "ctreg/simd.hpp"

namespace ctreg {

namespace {

// exp(x) for x <= 0 (x is clamped to >= -87.3: exp of less is returned as ~1e-38): Cody-Waite
// reduction x = n ln2 + f, |f| <= ln2/2, degree-6 Taylor polynomial (relative error < 2e-7).
// Branch-free and vectorisable.
CTREG_ALWAYS_INLINE inline float exp_nonpos(float x) {
    x = x < -87.3f ? -87.3f : x;
    const float t = x * 1.44269504088896341f;
    const std::int32_t n = std::int32_t(t - 0.5f);  // round to nearest for t <= 0
    const float fn = float(n);
    const float f = (x - fn * 0.693145751953125f) - fn * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const std::int32_t bits = (n + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(float));
    return p * scale;
}

// ------------------------------------------------------------------------------------------
// MIND-SSC

struct MindGeom {
    Shape3 s;
    index_t r, d, pz, py, px;  // box radius, distance; padded dims (n + 2d)
    int a[kMindChannels][3], b[kMindChannels][3];
    index_t off_a[kMindChannels], off_b[kMindChannels];  // flat offsets in the padded image
};

// One channel c of slice k: S = (I(p + a) - I(p + b))^2 on the slice (padded image: no
// clamping needed), box-summed along x (edges replicated) into xbuf, then along y into dst.
CTREG_ALWAYS_INLINE inline void mind_slice_body(const MindGeom& g, const float* __restrict pad, index_t k,
                                                int c, float* __restrict srow, float* __restrict xbuf,
                                                float* __restrict dst) {
    const index_t nx = g.s.nx, ny = g.s.ny, r = g.r;
    for (index_t j = 0; j < ny; ++j) {
        const float* base = pad + ((k + g.d) * g.py + (j + g.d)) * g.px + g.d;
        const float* pa = base + g.off_a[c];
        const float* pb = base + g.off_b[c];
        float* sr = srow + r;
        for (index_t i = 0; i < nx; ++i) {
            const float t = pa[i] - pb[i];
            sr[i] = t * t;
        }
        for (index_t q = 1; q <= r; ++q) {
            sr[-q] = sr[0];
            sr[nx - 1 + q] = sr[nx - 1];
        }
        float* xo = xbuf + j * nx;
        for (index_t i = 0; i < nx; ++i) xo[i] = srow[i];
        for (index_t q = 1; q <= 2 * r; ++q)
            for (index_t i = 0; i < nx; ++i) xo[i] += srow[i + q];
    }
    for (index_t j = 0; j < ny; ++j) {
        float* o = dst + j * nx;
        const float* first = xbuf + clampi(j - r, ny) * nx;
        for (index_t i = 0; i < nx; ++i) o[i] = first[i];
        for (index_t q = -r + 1; q <= r; ++q) {
            const float* row = xbuf + clampi(j + q, ny) * nx;
            for (index_t i = 0; i < nx; ++i) o[i] += row[i];
        }
    }
}

// The z sums of the 12 channels of output slice k (ring slots of slices clamp(k + q)), the
// per-voxel minimum subtracted, written interleaved into out; returns sum_m V(m) (double).
CTREG_ALWAYS_INLINE inline double mind_combine_body(const MindGeom& g, float* const* ring, index_t nslot,
                                                    index_t k, float* __restrict dbuf,
                                                    float* __restrict out) {
    const index_t nyx = g.s.ny * g.s.nx, r = g.r;
    const float norm = float(1.0 / double((2 * r + 1) * (2 * r + 1) * (2 * r + 1)));
    for (int c = 0; c < kMindChannels; ++c) {
        float* dc = dbuf + c * nyx;
        const float* first = ring[c] + (clampi(k - r, g.s.nz) % nslot) * nyx;
        for (index_t m = 0; m < nyx; ++m) dc[m] = first[m];
        for (index_t q = -r + 1; q <= r; ++q) {
            const float* sl = ring[c] + (clampi(k + q, g.s.nz) % nslot) * nyx;
            for (index_t m = 0; m < nyx; ++m) dc[m] += sl[m];
        }
        for (index_t m = 0; m < nyx; ++m) dc[m] *= norm;
    }
    double vsum = 0.0;
    constexpr index_t kB = 64;
    float mn[kB], vs[kB];
    for (index_t m0 = 0; m0 < nyx; m0 += kB) {
        const index_t nb = std::min(kB, nyx - m0);
        for (index_t t = 0; t < nb; ++t) mn[t] = dbuf[m0 + t];
        for (int c = 1; c < kMindChannels; ++c) {
            const float* dc = dbuf + c * nyx + m0;
            for (index_t t = 0; t < nb; ++t) mn[t] = dc[t] < mn[t] ? dc[t] : mn[t];
        }
        for (index_t t = 0; t < nb; ++t) vs[t] = 0.0f;
        for (int c = 0; c < kMindChannels; ++c) {
            const float* dc = dbuf + c * nyx + m0;
            float* o = out + m0 * kMindChannels + c;
            for (index_t t = 0; t < nb; ++t) {
                const float v = dc[t] - mn[t];
                o[t * kMindChannels] = v;
                vs[t] += v;
            }
        }
        for (index_t t = 0; t < nb; ++t) vsum += double(vs[t] * (1.0f / kMindChannels));
    }
    return vsum;
}

// out[m, c] = exp(-out[m, c] / clamp(V(m), lo, hi)) for the n voxels of one slice.
CTREG_ALWAYS_INLINE inline void mind_exp_body(float* __restrict out, index_t n, float lo, float hi) {
    constexpr index_t kB = 64;
    float inv[kB * kMindChannels];
    for (index_t m0 = 0; m0 < n; m0 += kB) {
        const index_t nb = std::min(kB, n - m0);
        float* o = out + m0 * kMindChannels;
        for (index_t t = 0; t < nb; ++t) {
            float vs = 0.0f;
            for (int c = 0; c < kMindChannels; ++c) vs += o[t * kMindChannels + c];
            float v = vs * (1.0f / kMindChannels);
            v = v < lo ? lo : (v > hi ? hi : v);
            const float iv = 1.0f / v;
            for (int c = 0; c < kMindChannels; ++c) inv[t * kMindChannels + c] = iv;
        }
        const index_t len = nb * kMindChannels;
        for (index_t t = 0; t < len; ++t) o[t] = exp_nonpos(-(o[t] * inv[t]));
    }
}

using SliceFn = void (*)(const MindGeom&, const float*, index_t, int, float*, float*, float*);
using CombineFn = double (*)(const MindGeom&, float* const*, index_t, index_t, float*, float*);
using ExpFn = void (*)(float*, index_t, float, float);

void mind_slice_generic(const MindGeom& g, const float* pad, index_t k, int c, float* srow, float* xbuf,
                        float* dst) {
    mind_slice_body(g, pad, k, c, srow, xbuf, dst);
}
double mind_combine_generic(const MindGeom& g, float* const* ring, index_t nslot, index_t k, float* dbuf,
                            float* out) {
    return mind_combine_body(g, ring, nslot, k, dbuf, out);
}
void mind_exp_generic(float* out, index_t n, float lo, float hi) { mind_exp_body(out, n, lo, hi); }
#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void mind_slice_avx2(const MindGeom& g, const float* pad, index_t k, int c,
                                                     float* srow, float* xbuf, float* dst) {
    mind_slice_body(g, pad, k, c, srow, xbuf, dst);
}
__attribute__((target("avx2"))) double mind_combine_avx2(const MindGeom& g, float* const* ring, index_t nslot,
                                                         index_t k, float* dbuf, float* out) {
    return mind_combine_body(g, ring, nslot, k, dbuf, out);
}
__attribute__((target("avx2"))) void mind_exp_avx2(float* out, index_t n, float lo, float hi) {
    mind_exp_body(out, n, lo, hi);
}
#endif

}  // namespace

void mind_pair(int c, int a[3], int b[3]) {
    static const int nb[6][3] = {{-1, 0, 0}, {1, 0, 0}, {0, -1, 0}, {0, 1, 0}, {0, 0, -1}, {0, 0, 1}};
    int n = 0;
    for (int p = 0; p < 6; ++p)
        for (int q = p + 1; q < 6; ++q) {
            if (q == p + 1 && p % 2 == 0) continue;  // opposite neighbours
            if (n == c) {
                for (int t = 0; t < 3; ++t) {
                    a[t] = nb[p][t];
                    b[t] = nb[q][t];
                }
                return;
            }
            ++n;
        }
}

void mind_ssc(const float* image, const Shape3& s, int radius, int distance, float* out) {
    MindGeom g;
    g.s = s;
    g.r = radius;
    g.d = distance;
    g.pz = s.nz + 2 * g.d;
    g.py = s.ny + 2 * g.d;
    g.px = s.nx + 2 * g.d;
    for (int c = 0; c < kMindChannels; ++c) {
        mind_pair(c, g.a[c], g.b[c]);
        g.off_a[c] = (index_t(g.a[c][0]) * g.py * g.px + index_t(g.a[c][1]) * g.px + g.a[c][2]) * g.d;
        g.off_b[c] = (index_t(g.b[c][0]) * g.py * g.px + index_t(g.b[c][1]) * g.px + g.b[c][2]) * g.d;
    }
    const int nthreads = ctreg::num_threads();
    // The image with d replicated voxels on every side: the shifted reads need no clamping.
    std::vector<float> pad(static_cast<std::size_t>(g.pz * g.py * g.px));
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t k = 0; k < g.pz; ++k)
        for (index_t j = 0; j < g.py; ++j) {
            const float* src = image + (clampi(k - g.d, s.nz) * s.ny + clampi(j - g.d, s.ny)) * s.nx;
            float* dst = pad.data() + (k * g.py + j) * g.px;
            for (index_t i = 0; i < g.d; ++i) {
                dst[i] = src[0];
                dst[g.d + s.nx + i] = src[s.nx - 1];
            }
            std::memcpy(dst + g.d, src, static_cast<std::size_t>(s.nx) * sizeof(float));
        }

    SliceFn slice_fn = &mind_slice_generic;
    CombineFn combine_fn = &mind_combine_generic;
    ExpFn exp_fn = &mind_exp_generic;
#if CTREG_X86_DISPATCH
    if (use_avx2()) {
        slice_fn = &mind_slice_avx2;
        combine_fn = &mind_combine_avx2;
        exp_fn = &mind_exp_avx2;
    }
#endif
    const index_t nyx = s.ny * s.nx, nslot = 2 * g.r + 1;
    // Contiguous runs of slices, one per thread: each run keeps a ring of the last 2r + 1
    // y-x-filtered slices per channel.  A voxel's value does not depend on the runs.
    const index_t nchunk = std::max<index_t>(1, std::min<index_t>(s.nz, nthreads));
    std::vector<double> vsum(static_cast<std::size_t>(s.nz), 0.0);
#pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (index_t ch = 0; ch < nchunk; ++ch) {
        const index_t k0 = ch * s.nz / nchunk, k1 = (ch + 1) * s.nz / nchunk;
        std::vector<float> ringbuf(static_cast<std::size_t>(kMindChannels * nslot * nyx));
        std::vector<float> xbuf(static_cast<std::size_t>(nyx)), srow(static_cast<std::size_t>(s.nx + 2 * g.r));
        std::vector<float> dbuf(static_cast<std::size_t>(kMindChannels * nyx));
        float* ring[kMindChannels];
        for (int c = 0; c < kMindChannels; ++c) ring[c] = ringbuf.data() + c * nslot * nyx;
        index_t next = std::max<index_t>(0, k0 - g.r);
        for (index_t k = k0; k < k1; ++k) {
            const index_t need = std::min(s.nz - 1, k + g.r);
            for (; next <= need; ++next)
                for (int c = 0; c < kMindChannels; ++c)
                    slice_fn(g, pad.data(), next, c, srow.data(), xbuf.data(), ring[c] + (next % nslot) * nyx);
            vsum[static_cast<std::size_t>(k)] = combine_fn(g, ring, nslot, k, dbuf.data(), out + k * nyx * kMindChannels);
        }
    }
    double total = 0.0;
    for (double v : vsum) total += v;
    const double mean_v = total / double(s.size());
    float lo, hi;
    if (mean_v > 0.0 && std::isfinite(mean_v)) {
        lo = float(1e-3 * mean_v);
        hi = float(1e3 * mean_v);
        if (!(lo > 0.0f)) lo = std::numeric_limits<float>::min();
    } else {  // every D_c - min is 0 (constant image): descriptor 1 everywhere
        lo = hi = 1.0f;
    }
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t k = 0; k < s.nz; ++k) exp_fn(out + k * nyx * kMindChannels, nyx, lo, hi);
}

}  // namespace ctreg
