// MIND-SSC descriptors, block-matching costs and the coupled-convex argmin (ctreg/mind.hpp).
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
#include "ctreg/warp.hpp"  // simd_dispatch_enabled()

namespace ctreg {

namespace {

inline index_t clampi(index_t v, index_t n) { return v < 0 ? 0 : (v >= n ? n - 1 : v); }

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

// ------------------------------------------------------------------------------------------
// Block matching
//
// The block voxels of all control points form a product set U = Uz x Uy x Ux (per axis: the
// positions g * step + o inside the volume), and neighbouring control points share many of
// them (grid step 4, block {-2, 0, 2}: 2 of 3 per axis).  So for each slab of control points
// with the same gz, and each search offset (dz, dy), the point costs
//     E[u][ix] = sum_c |ref[u, c] - flt[clamp(u + (dz, dy, dx_ix)), c]|
// are computed once per u of the slab (ix: the 2K + 1 x offsets, vectorised), then summed
// separably: over the block's x positions (Sx), then over its (z, y) rows in (oz, oy) order.
// Floating features are stored planar with replicated x padding, so the dx lanes of a row
// are contiguous (strided for search_step > 1).

namespace {

struct AxisBlocks {
    std::vector<index_t> pos;   // U along this axis (sorted voxel positions)
    std::vector<index_t> map;   // map[g * nO + i] = index in pos of g * step + O[i], or -1
    std::vector<index_t> count; // block positions of g inside the volume
};

AxisBlocks axis_blocks(index_t n, index_t G, index_t step, const std::vector<index_t>& ob) {
    AxisBlocks a;
    const index_t nO = index_t(ob.size());
    std::vector<index_t> where(static_cast<std::size_t>(n), -1);
    for (index_t g = 0; g < G; ++g)
        for (index_t o : ob) {
            const index_t p = g * step + o;
            if (p >= 0 && p < n) where[static_cast<std::size_t>(p)] = 1;
        }
    for (index_t p = 0; p < n; ++p)
        if (where[static_cast<std::size_t>(p)] >= 0) {
            where[static_cast<std::size_t>(p)] = index_t(a.pos.size());
            a.pos.push_back(p);
        }
    a.map.assign(static_cast<std::size_t>(G * nO), -1);
    a.count.assign(static_cast<std::size_t>(G), 0);
    for (index_t g = 0; g < G; ++g)
        for (index_t i = 0; i < nO; ++i) {
            const index_t p = g * step + ob[static_cast<std::size_t>(i)];
            if (p >= 0 && p < n) {
                a.map[static_cast<std::size_t>(g * nO + i)] = where[static_cast<std::size_t>(p)];
                ++a.count[static_cast<std::size_t>(g)];
            }
        }
    return a;
}

// e[t] = sum_c |rv[c] - row_c[t]| for t < NL, row_c = f + c * cstride (NL a multiple of 8;
// the lanes past the 2K + 1 offsets are discarded later).
template <int NL>
CTREG_ALWAYS_INLINE inline void bm_point_fixed(const float* __restrict rv, const float* __restrict f,
                                               index_t cstride, index_t C, float* __restrict e) {
    float acc[NL];
    for (int t = 0; t < NL; ++t) acc[t] = 0.0f;
    for (index_t c = 0; c < C; ++c) {
        const float r = rv[c];
        const float* row = f + c * cstride;
        for (int t = 0; t < NL; ++t) acc[t] += std::fabs(r - row[t]);
    }
    for (int t = 0; t < NL; ++t) e[t] = acc[t];
}

CTREG_ALWAYS_INLINE inline void bm_point_strided(const float* __restrict rv, const float* __restrict f,
                                                 index_t cstride, index_t C, index_t nl, index_t st,
                                                 float* __restrict e) {
    for (index_t t = 0; t < nl; ++t) e[t] = 0.0f;
    for (index_t c = 0; c < C; ++c) {
        const float r = rv[c];
        const float* row = f + c * cstride;
        for (index_t t = 0; t < nl; ++t) e[t] += std::fabs(r - row[t * st]);
    }
}

struct SlabArgs {
    const BlockMatchArgs* a;
    const float* fp;        // planar padded floating features [c][z][y][nxp]
    index_t nxp, xpad, cstride;
    index_t K, Ls, NL, st, nO;
    const AxisBlocks *bz, *by, *bx;
};

// E rows of one (z position, dz, dy) for the needed (uy, ux) of the slab, then their x sums
// Sx[uy][gx][NL].
CTREG_ALWAYS_INLINE inline void bm_rows_body(const SlabArgs& s, index_t zv, index_t dz, index_t dy,
                                             const std::uint8_t* need, float* __restrict E,
                                             float* __restrict Sx) {
    const BlockMatchArgs& a = *s.a;
    const Shape3 sh = a.shape;
    const index_t C = a.channels, NL = s.NL;
    const index_t nuy = index_t(s.by->pos.size()), nux = index_t(s.bx->pos.size());
    const index_t Gx = a.grid.nx, nO = s.nO;
    const index_t zc = clampi(zv + dz, sh.nz);
    for (index_t uy = 0; uy < nuy; ++uy) {
        const index_t yv = s.by->pos[static_cast<std::size_t>(uy)];
        const index_t yc = clampi(yv + dy, sh.ny);
        const float* frow = s.fp + (zc * sh.ny + yc) * s.nxp + s.xpad - s.K * s.st;
        const float* rrow = a.ref + (zv * sh.ny + yv) * sh.nx * C;
        const std::uint8_t* nrow = need + uy * nux;
        bool any = false;
        for (index_t ux = 0; ux < nux; ++ux) {
            if (!nrow[ux]) continue;
            any = true;
            const index_t xv = s.bx->pos[static_cast<std::size_t>(ux)];
            float* e = E + ux * NL;
            const float* rv = rrow + xv * C;
            const float* f = frow + xv;
            if (s.st == 1 && NL == 8) {
                bm_point_fixed<8>(rv, f, s.cstride, C, e);
            } else if (s.st == 1 && NL == 16) {
                bm_point_fixed<16>(rv, f, s.cstride, C, e);
            } else if (s.st == 1 && NL == 24) {
                bm_point_fixed<24>(rv, f, s.cstride, C, e);
            } else if (s.st == 1 && NL == 32) {
                bm_point_fixed<32>(rv, f, s.cstride, C, e);
            } else {
                bm_point_strided(rv, f, s.cstride, C, s.Ls, s.st, e);
            }
        }
        if (!any) continue;
        for (index_t gx = 0; gx < Gx; ++gx) {
            float* o = Sx + (uy * Gx + gx) * NL;
            for (index_t t = 0; t < NL; ++t) o[t] = 0.0f;
            const index_t* m = s.bx->map.data() + gx * nO;
            for (index_t i = 0; i < nO; ++i) {
                if (m[i] < 0 || !nrow[m[i]]) continue;
                const float* e = E + m[i] * NL;
                for (index_t t = 0; t < NL; ++t) o[t] += e[t];
            }
        }
    }
}

// acc[gy][gx] += Sx[uy(gy, oy)][gx] for the slab's active (gy, gx), oy in order.
CTREG_ALWAYS_INLINE inline void bm_ysum_body(const SlabArgs& s, const std::uint8_t* act2, const float* __restrict Sx,
                                             float* __restrict acc) {
    const index_t Gy = s.a->grid.ny, Gx = s.a->grid.nx, NL = s.NL, nO = s.nO;
    for (index_t gy = 0; gy < Gy; ++gy) {
        const index_t* m = s.by->map.data() + gy * nO;
        for (index_t gx = 0; gx < Gx; ++gx) {
            if (!act2[gy * Gx + gx]) continue;
            float* o = acc + (gy * Gx + gx) * NL;
            for (index_t i = 0; i < nO; ++i) {
                if (m[i] < 0) continue;
                const float* sx = Sx + (m[i] * Gx + gx) * NL;
                for (index_t t = 0; t < NL; ++t) o[t] += sx[t];
            }
        }
    }
}

using RowsFn = void (*)(const SlabArgs&, index_t, index_t, index_t, const std::uint8_t*, float*, float*);
using YsumFn = void (*)(const SlabArgs&, const std::uint8_t*, const float*, float*);
void bm_rows_generic(const SlabArgs& s, index_t zv, index_t dz, index_t dy, const std::uint8_t* need, float* E,
                     float* Sx) {
    bm_rows_body(s, zv, dz, dy, need, E, Sx);
}
void bm_ysum_generic(const SlabArgs& s, const std::uint8_t* act2, const float* Sx, float* acc) {
    bm_ysum_body(s, act2, Sx, acc);
}
#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void bm_rows_avx2(const SlabArgs& s, index_t zv, index_t dz, index_t dy,
                                                  const std::uint8_t* need, float* E, float* Sx) {
    bm_rows_body(s, zv, dz, dy, need, E, Sx);
}
__attribute__((target("avx2"))) void bm_ysum_avx2(const SlabArgs& s, const std::uint8_t* act2, const float* Sx,
                                                  float* acc) {
    bm_ysum_body(s, act2, Sx, acc);
}
#endif

}  // namespace

void block_match_cost(const BlockMatchArgs& a) {
    const Shape3 sh = a.shape, G = a.grid;
    const index_t C = a.channels, N = sh.size();
    const index_t st = a.search_step, K = a.search_radius / st, Ls = 2 * K + 1, L = Ls * Ls * Ls;
    const index_t B = a.block_radius;
    const index_t NL = st == 1 ? std::max<index_t>(8, (Ls + 7) / 8 * 8) : Ls;
    const int nthreads = ctreg::num_threads();
    // Planar floating features, each x row padded with replicated edges (K * st + NL each side:
    // covers the clamped reach and the discarded lanes).
    const index_t xpad = K * st + std::max<index_t>(NL, 8), nxp = sh.nx + 2 * xpad;
    const index_t cstride = sh.nz * sh.ny * nxp;
    std::vector<float> fp(static_cast<std::size_t>(C * cstride));
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t zy = 0; zy < sh.nz * sh.ny; ++zy) {
        const float* src = a.flt + zy * sh.nx * C;
        for (index_t c = 0; c < C; ++c) {
            float* dst = fp.data() + c * cstride + zy * nxp;
            for (index_t i = 0; i < xpad; ++i) {
                dst[i] = src[c];
                dst[xpad + sh.nx + i] = src[(sh.nx - 1) * C + c];
            }
            for (index_t i = 0; i < sh.nx; ++i) dst[xpad + i] = src[i * C + c];
        }
    }
    (void)N;
    std::vector<index_t> ob;  // block offsets along one axis
    for (index_t o = -B; o <= B; o += a.block_step) ob.push_back(o);
    const index_t nO = index_t(ob.size());
    const AxisBlocks bz = axis_blocks(sh.nz, G.nz, a.grid_step, ob), by = axis_blocks(sh.ny, G.ny, a.grid_step, ob),
                     bx = axis_blocks(sh.nx, G.nx, a.grid_step, ob);
    // Active control points (any mask voxel in the full block cube).
    const index_t ng = G.size();
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t gi = 0; gi < ng; ++gi) {
        bool act = true;
        if (a.mask) {
            const index_t pz = (gi / (G.ny * G.nx)) * a.grid_step, py = ((gi / G.nx) % G.ny) * a.grid_step,
                          px = (gi % G.nx) * a.grid_step;
            act = false;
            for (index_t z = std::max<index_t>(0, pz - B); z <= std::min(sh.nz - 1, pz + B) && !act; ++z)
                for (index_t y = std::max<index_t>(0, py - B); y <= std::min(sh.ny - 1, py + B) && !act; ++y)
                    for (index_t x = std::max<index_t>(0, px - B); x <= std::min(sh.nx - 1, px + B); ++x)
                        if (a.mask[sh.at(z, y, x)]) {
                            act = true;
                            break;
                        }
        }
        a.active[gi] = act ? 1 : 0;
    }
    SlabArgs s;
    s.a = &a;
    s.fp = fp.data();
    s.nxp = nxp;
    s.xpad = xpad;
    s.cstride = cstride;
    s.K = K;
    s.Ls = Ls;
    s.NL = NL;
    s.st = st;
    s.nO = nO;
    s.bz = &bz;
    s.by = &by;
    s.bx = &bx;
    RowsFn rows_fn = &bm_rows_generic;
    YsumFn ysum_fn = &bm_ysum_generic;
#if CTREG_X86_DISPATCH
    if (use_avx2()) {
        rows_fn = &bm_rows_avx2;
        ysum_fn = &bm_ysum_avx2;
    }
#endif
    const index_t nuy = index_t(by.pos.size()), nux = index_t(bx.pos.size());
    const index_t slab = G.ny * G.nx;
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<float> E(static_cast<std::size_t>(nux * NL)), Sx(static_cast<std::size_t>(nuy * G.nx * NL)),
            acc(static_cast<std::size_t>(slab * NL));
        std::vector<std::uint8_t> need(static_cast<std::size_t>(nuy * nux)), act2(static_cast<std::size_t>(slab));
        std::vector<float> scale(static_cast<std::size_t>(slab));
#pragma omp for schedule(dynamic, 1)
        for (index_t gz = 0; gz < G.nz; ++gz) {
            float* cost = a.cost + gz * slab * L;
            bool any = false;
            std::fill(need.begin(), need.end(), std::uint8_t(0));
            for (index_t gy = 0; gy < G.ny; ++gy)
                for (index_t gx = 0; gx < G.nx; ++gx) {
                    const index_t g2 = gy * G.nx + gx;
                    act2[static_cast<std::size_t>(g2)] = a.active[gz * slab + g2];
                    if (!act2[static_cast<std::size_t>(g2)]) {
                        std::fill(cost + g2 * L, cost + (g2 + 1) * L, 0.0f);
                        continue;
                    }
                    any = true;
                    const index_t n_in = bz.count[static_cast<std::size_t>(gz)] * by.count[static_cast<std::size_t>(gy)] *
                                         bx.count[static_cast<std::size_t>(gx)];
                    scale[static_cast<std::size_t>(g2)] = float(1.0 / double(n_in));
                    for (index_t i = 0; i < nO; ++i) {
                        const index_t uy = by.map[static_cast<std::size_t>(gy * nO + i)];
                        if (uy < 0) continue;
                        for (index_t j = 0; j < nO; ++j) {
                            const index_t ux = bx.map[static_cast<std::size_t>(gx * nO + j)];
                            if (ux >= 0) need[static_cast<std::size_t>(uy * nux + ux)] = 1;
                        }
                    }
                }
            if (!any) continue;
            for (index_t iz = 0; iz < Ls; ++iz)
                for (index_t iy = 0; iy < Ls; ++iy) {
                    const index_t dz = (iz - K) * st, dy = (iy - K) * st;
                    std::fill(acc.begin(), acc.end(), 0.0f);
                    for (index_t i = 0; i < nO; ++i) {
                        const index_t uz = bz.map[static_cast<std::size_t>(gz * nO + i)];
                        if (uz < 0) continue;
                        rows_fn(s, bz.pos[static_cast<std::size_t>(uz)], dz, dy, need.data(), E.data(), Sx.data());
                        ysum_fn(s, act2.data(), Sx.data(), acc.data());
                    }
                    for (index_t g2 = 0; g2 < slab; ++g2) {
                        if (!act2[static_cast<std::size_t>(g2)]) continue;
                        const float* ac = acc.data() + g2 * NL;
                        const float sc = scale[static_cast<std::size_t>(g2)];
                        float* o = cost + g2 * L + (iz * Ls + iy) * Ls;
                        for (index_t ix = 0; ix < Ls; ++ix) o[ix] = ac[ix] * sc;
                    }
                }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Coupled-convex argmin

namespace {

CTREG_ALWAYS_INLINE inline void argmin_body(const float* __restrict cost, index_t n0, index_t n1, index_t L,
                                            const float* __restrict dz, const float* __restrict dy,
                                            const float* __restrict dx, const float* __restrict v, float theta,
                                            std::int32_t* __restrict idx, float* __restrict u,
                                            float* __restrict e) {
    for (index_t g = n0; g < n1; ++g) {
        const float vz = v[3 * g], vy = v[3 * g + 1], vx = v[3 * g + 2];
        const float* cg = cost + g * L;
        for (index_t l = 0; l < L; ++l) {
            const float a = dz[l] - vz, b = dy[l] - vy, c = dx[l] - vx;
            e[l] = cg[l] + theta * ((a * a + b * b) + c * c);
        }
        float best = e[0];
        for (index_t l = 1; l < L; ++l) best = e[l] < best ? e[l] : best;
        index_t bi = 0;
        for (index_t l = 0; l < L; ++l)
            if (e[l] == best) {
                bi = l;
                break;
            }
        if (!(best == best)) bi = 0;  // NaN costs: offset 0 of the list
        idx[g] = std::int32_t(bi);
        u[3 * g] = dz[bi];
        u[3 * g + 1] = dy[bi];
        u[3 * g + 2] = dx[bi];
    }
}

using ArgminFn = void (*)(const float*, index_t, index_t, index_t, const float*, const float*, const float*,
                          const float*, float, std::int32_t*, float*, float*);
void argmin_generic(const float* cost, index_t n0, index_t n1, index_t L, const float* dz, const float* dy,
                    const float* dx, const float* v, float theta, std::int32_t* idx, float* u, float* e) {
    argmin_body(cost, n0, n1, L, dz, dy, dx, v, theta, idx, u, e);
}
#if CTREG_X86_DISPATCH
__attribute__((target("avx2"))) void argmin_avx2(const float* cost, index_t n0, index_t n1, index_t L,
                                                 const float* dz, const float* dy, const float* dx,
                                                 const float* v, float theta, std::int32_t* idx, float* u,
                                                 float* e) {
    argmin_body(cost, n0, n1, L, dz, dy, dx, v, theta, idx, u, e);
}
#endif

}  // namespace

void coupled_argmin(const float* cost, index_t n, index_t L, const float* disp, const float* v, float theta,
                    std::int32_t* idx, float* u) {
    std::vector<float> dz(static_cast<std::size_t>(L)), dy(static_cast<std::size_t>(L)), dx(static_cast<std::size_t>(L));
    for (index_t l = 0; l < L; ++l) {
        dz[static_cast<std::size_t>(l)] = disp[3 * l];
        dy[static_cast<std::size_t>(l)] = disp[3 * l + 1];
        dx[static_cast<std::size_t>(l)] = disp[3 * l + 2];
    }
    ArgminFn fn = &argmin_generic;
#if CTREG_X86_DISPATCH
    if (use_avx2()) fn = &argmin_avx2;
#endif
    constexpr index_t kChunkPts = 64;
    const index_t nchunk = (n + kChunkPts - 1) / kChunkPts;
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> e(static_cast<std::size_t>(L));
#pragma omp for schedule(dynamic, 4)
        for (index_t ch = 0; ch < nchunk; ++ch)
            fn(cost, ch * kChunkPts, std::min(n, (ch + 1) * kChunkPts), L, dz.data(), dy.data(), dx.data(), v,
               theta, idx, u, e.data());
    }
}

}  // namespace ctreg
