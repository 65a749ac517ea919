// Block-matching costs over a discrete displacement set and the exact argmin of the
// coupled-convex step (ctreg/mind.hpp); the MIND-SSC descriptors are in mind_descriptors.cpp.
//
// Determinism: every output value is computed by one thread from its inputs by a fixed
// sequence of float operations (no atomics, no cross-thread float reductions).  Results are
// identical for any thread count.  The inner loops are compiled for AVX2 and portable SSE2
// (picked at run time, no FMA: the same float operations).
#include "ctreg/mind.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "ctreg/simd.hpp"

namespace ctreg {

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
