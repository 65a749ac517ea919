// Similarity metrics (costs) and their gradients; see include/ctreg/metrics.hpp.
#include "ctreg/metrics.hpp"

#include <cmath>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "ctreg/bspline.hpp"

namespace ctreg {
namespace {

inline bool counted(const std::uint8_t* mask, index_t v) { return mask == nullptr || mask[v] != 0; }

// Store the gradient g = dcost/dW of voxel v (or its product with the warped image's gradient).
inline void put(const MetricArgs& a, index_t v, double g) {
    if (a.warped_gradient != nullptr) {
        const float* wg = a.warped_gradient + 3 * v;
        float* o = a.out + 3 * v;
        const float gf = static_cast<float>(g);
        o[0] = gf * wg[0];
        o[1] = gf * wg[1];
        o[2] = gf * wg[2];
    } else {
        a.out[v] = static_cast<float>(g);
    }
}

// Calls body(masked, fused) with compile-time booleans, so that the per-voxel loops carry no
// run-time tests of the optional arguments.
template <class Body>
auto specialise(const MetricArgs& a, Body&& body) {
    using T = std::true_type;
    using F = std::false_type;
    if (a.mask != nullptr) return a.warped_gradient != nullptr ? body(T{}, T{}) : body(T{}, F{});
    return a.warped_gradient != nullptr ? body(F{}, T{}) : body(F{}, F{});
}

template <bool Fused>
inline void put_t(const MetricArgs& a, index_t v, float g) {
    if constexpr (Fused) {
        const float* wg = a.warped_gradient + 3 * v;
        float* o = a.out + 3 * v;
        o[0] = g * wg[0];
        o[1] = g * wg[1];
        o[2] = g * wg[2];
    } else {
        a.out[v] = g;
    }
}

double ordered_sum(const std::vector<double>& partial) {
    double s = 0.0;
    for (double p : partial) s += p;
    return s;
}

index_t require_voxels(const MetricArgs& a) {
    const index_t n = mask_count(a.mask, a.shape);
    if (n == 0) throw std::invalid_argument("mask has no nonzero voxels: the metric needs at least one counted voxel");
    return n;
}

// Masked sums of R, W, RR, WW, RW per slice, added in slice order.
struct Moments {
    double sr = 0, sw = 0, srr = 0, sww = 0, srw = 0;
};

Moments moments(const MetricArgs& a, double cr, double cw) {
    const Shape3& s = a.shape;
    const index_t plane = s.ny * s.nx;
    std::vector<double> part(static_cast<size_t>(5 * s.nz), 0.0);
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (index_t k = 0; k < s.nz; ++k) {
        double sr = 0, sw = 0, srr = 0, sww = 0, srw = 0;
        for (index_t v = k * plane; v < (k + 1) * plane; ++v) {
            if (!counted(a.mask, v)) continue;
            const double r = a.reference[v] - cr, w = a.warped[v] - cw;
            sr += r;
            sw += w;
            srr += r * r;
            sww += w * w;
            srw += r * w;
        }
        double* p = &part[5 * k];
        p[0] = sr, p[1] = sw, p[2] = srr, p[3] = sww, p[4] = srw;
    }
    Moments m;
    for (index_t k = 0; k < s.nz; ++k) {
        const double* p = &part[5 * k];
        m.sr += p[0], m.sw += p[1], m.srr += p[2], m.sww += p[3], m.srw += p[4];
    }
    return m;
}

// 3-D box sums over clipped windows of K fields, row by row.
//   fill(k, j, rows): write the K raw rows (nx doubles each) of slice k, row j;
//   consume(k, j, sums): receives the K rows of window sums centred on voxel row (k, j).
// The volume is cut into fixed tiles of at most kChunk slices x `band` rows (independent of the
// thread count; `band` is sized so that a thread's working set stays in cache).  Inside a tile the
// z-window is a running sum (add the entering plane, subtract the leaving one) over a ring of
// 2-D box-summed planes; each plane (restricted to the band's rows) is built row by row with
// running sums along x, then along y.  Every running sum restarts at a tile or row start, so
// the results depend only on the inputs.
constexpr index_t kChunk = 16;

template <int K, class Fill, class Consume>
void box_sums(const Shape3& s, index_t rz, index_t ry, index_t rx, Fill&& fill, Consume&& consume) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx;
    const index_t slots = 2 * rz + 2, yslots = 2 * ry + 2;
    const index_t budget = (index_t(1) << 20) / static_cast<index_t>(sizeof(double));  // ~1 MiB ring
    const index_t band = std::min(ny, std::max<index_t>(16, budget / std::max<index_t>(1, slots * K * nx)));
    const index_t bands = (ny + band - 1) / band;
    // at most kChunk slices per tile, an even number of tiles of near-equal depth (two or four
    // threads then share them evenly); the split depends on nz only, not on the thread count
    index_t chunks = (nz + kChunk - 1) / kChunk;
    if (chunks > 1 && chunks % 2) ++chunks;
    const index_t depth = (nz + chunks - 1) / chunks;
    const index_t bplane = band * nx;
#pragma omp parallel num_threads(num_threads())
    {
        std::vector<double> ring(static_cast<size_t>(slots * K * bplane));  // [slot][f][row][i]
        std::vector<double> win(static_cast<size_t>(K * bplane));           // z running window sum
        std::vector<double> xring(static_cast<size_t>(yslots * K * nx));    // [slot][f][i]
        std::vector<double> raw(static_cast<size_t>(K * nx));
        double* rawp[K];
        for (int f = 0; f < K; ++f) rawp[f] = raw.data() + f * nx;
        const double* winp[K];
        index_t j0 = 0, j1 = 0;  // the current band

        auto slot_row = [&](index_t kk, int f, index_t j) {
            return ring.data() + (((kk % slots) * K + f) * band + (j - j0)) * nx;
        };
        // x-boxed row j of plane kk into the x-ring
        auto xrow = [&](index_t kk, index_t j) {
            fill(kk, j, static_cast<double* const*>(rawp));
            double* dst = xring.data() + (j % yslots) * K * nx;
            // all K running sums advance together: K independent dependency chains
            double sum[K];
            for (int f = 0; f < K; ++f) {
                sum[f] = 0.0;
                for (index_t i = 0; i <= std::min(rx, nx - 1); ++i) sum[f] += rawp[f][i];
            }
            for (index_t i = 0; i < nx; ++i) {
                for (int f = 0; f < K; ++f) dst[f * nx + i] = sum[f];
                if (i + rx + 1 < nx)
                    for (int f = 0; f < K; ++f) sum[f] += rawp[f][i + rx + 1];
                if (i - rx >= 0)
                    for (int f = 0; f < K; ++f) sum[f] -= rawp[f][i - rx];
            }
        };
        auto xring_row = [&](index_t j, int f) { return xring.data() + ((j % yslots) * K + f) * nx; };
        // Build rows j0..j1-1 of plane kk into its ring slot; after each row j call on_row(j).
        auto build = [&](index_t kk, auto&& on_row) {
            const index_t lo = std::max<index_t>(0, j0 - ry), hi = std::min(ny - 1, j0 + ry);
            for (index_t j = lo; j <= hi; ++j) xrow(kk, j);
            for (int f = 0; f < K; ++f) {
                double* dst = slot_row(kk, f, j0);
                std::fill(dst, dst + nx, 0.0);
                for (index_t j = lo; j <= hi; ++j) {
                    const double* xr = xring_row(j, f);
                    for (index_t i = 0; i < nx; ++i) dst[i] += xr[i];
                }
            }
            on_row(j0);
            for (index_t j = j0 + 1; j < j1; ++j) {  // running sum along y: row j from row j - 1
                const index_t add = j + ry, sub = j - ry - 1;
                if (add < ny) xrow(kk, add);
                for (int f = 0; f < K; ++f) {
                    const double* prev = slot_row(kk, f, j - 1);
                    double* dst = slot_row(kk, f, j);
                    const double* xa = add < ny ? xring_row(add, f) : nullptr;
                    const double* xs = sub >= 0 ? xring_row(sub, f) : nullptr;
                    if (xa && xs)
                        for (index_t i = 0; i < nx; ++i) dst[i] = (prev[i] + xa[i]) - xs[i];
                    else if (xa)
                        for (index_t i = 0; i < nx; ++i) dst[i] = prev[i] + xa[i];
                    else if (xs)
                        for (index_t i = 0; i < nx; ++i) dst[i] = prev[i] - xs[i];
                    else
                        std::copy_n(prev, nx, dst);
                }
                on_row(j);
            }
        };
        auto win_row = [&](int f, index_t j) { return win.data() + (f * band + (j - j0)) * nx; };

#pragma omp for schedule(dynamic, 1)
        for (index_t tile = 0; tile < chunks * bands; ++tile) {
            const index_t ch = tile / bands, bd = tile % bands;
            j0 = bd * band;
            j1 = std::min(ny, j0 + band);
            const index_t k0 = ch * depth, k1 = std::min(nz, k0 + depth);
            if (k0 >= k1) continue;
            const index_t lo = std::max<index_t>(0, k0 - rz), hi = std::min(nz - 1, k0 + rz);
            for (index_t kk = lo; kk <= hi; ++kk) build(kk, [](index_t) {});
            for (index_t j = j0; j < j1; ++j) {
                for (int f = 0; f < K; ++f) {
                    double* w = win_row(f, j);
                    std::fill(w, w + nx, 0.0);
                    for (index_t kk = lo; kk <= hi; ++kk) {
                        const double* r = slot_row(kk, f, j);
                        for (index_t i = 0; i < nx; ++i) w[i] += r[i];
                    }
                    winp[f] = w;
                }
                consume(k0, j, static_cast<const double* const*>(winp));
            }
            for (index_t k = k0 + 1; k < k1; ++k) {
                const index_t add = k + rz, sub = k - rz - 1;
                auto step = [&](index_t j) {
                    for (int f = 0; f < K; ++f) {
                        double* w = win_row(f, j);
                        if (add < nz) {
                            const double* r = slot_row(add, f, j);
                            for (index_t i = 0; i < nx; ++i) w[i] += r[i];
                        }
                        if (sub >= 0) {
                            const double* r = slot_row(sub, f, j);
                            for (index_t i = 0; i < nx; ++i) w[i] -= r[i];
                        }
                        winp[f] = w;
                    }
                    consume(k, j, static_cast<const double* const*>(winp));
                };
                if (add < nz)
                    build(add, step);
                else
                    for (index_t j = j0; j < j1; ++j) step(j);
            }
        }
    }
}

}  // namespace

index_t mask_count(const std::uint8_t* mask, const Shape3& shape) {
    if (mask == nullptr) return shape.size();
    const index_t plane = shape.ny * shape.nx;
    index_t n = 0;
#pragma omp parallel for schedule(static) reduction(+ : n) num_threads(num_threads())
    for (index_t k = 0; k < shape.nz; ++k)
        for (index_t v = k * plane; v < (k + 1) * plane; ++v) n += mask[v] != 0;
    return n;
}

double ssd(const MetricArgs& a) {
    const index_t n = require_voxels(a);
    const Shape3& s = a.shape;
    const index_t plane = s.ny * s.nx;
    const double inv_n = 1.0 / static_cast<double>(n);
    std::vector<double> part(static_cast<size_t>(s.nz), 0.0);
    specialise(a, [&](auto masked, auto fused) {
        const std::uint8_t* mask = a.mask;
        const float* R = a.reference;
        const float* W = a.warped;
#pragma omp parallel for schedule(static) num_threads(num_threads())
        for (index_t k = 0; k < s.nz; ++k) {
            double acc = 0.0;
            for (index_t v = k * plane; v < (k + 1) * plane; ++v) {
                double d = static_cast<double>(W[v]) - R[v];
                if constexpr (decltype(masked)::value) d = mask[v] != 0 ? d : 0.0;
                acc += d * d;
                put_t<decltype(fused)::value>(a, v, static_cast<float>(2.0 * inv_n * d));
            }
            part[k] = acc;
        }
        return 0;
    });
    return ordered_sum(part) * inv_n;
}

double ncc(const MetricArgs& a) {
    const index_t n = require_voxels(a);
    const Shape3& s = a.shape;
    const index_t plane = s.ny * s.nx;
    const double inv_n = 1.0 / static_cast<double>(n);
    // Centre on the first counted voxel's values to keep the one-pass moments well conditioned.
    double cr = 0.0, cw = 0.0;
    for (index_t v = 0; v < s.size(); ++v)
        if (counted(a.mask, v)) {
            cr = a.reference[v], cw = a.warped[v];
            break;
        }
    const Moments m = moments(a, cr, cw);
    const double mr = m.sr * inv_n, mw = m.sw * inv_n;
    const double vr = m.srr * inv_n - mr * mr, vw = m.sww * inv_n - mw * mw;
    const double cov = m.srw * inv_n - mr * mw;
    const bool flat = !(vr > 1e-12 * m.srr * inv_n) || !(vw > 1e-12 * m.sww * inv_n) || vr <= 0 || vw <= 0;
    const double sd = flat ? 1.0 : std::sqrt(vr * vw);
    const double nccv = flat ? 0.0 : cov / sd;
    // d(-NCC)/dW_v = -[(R_v - mr) / sd - NCC (W_v - mw) / vw] / N
    const double ca = flat ? 0.0 : -inv_n / sd, cb = flat ? 0.0 : inv_n * nccv / vw;
    const double r0 = cr + mr, w0 = cw + mw;
    specialise(a, [&](auto masked, auto fused) {
        const std::uint8_t* mask = a.mask;
        const float* R = a.reference;
        const float* W = a.warped;
#pragma omp parallel for schedule(static) num_threads(num_threads())
        for (index_t k = 0; k < s.nz; ++k)
            for (index_t v = k * plane; v < (k + 1) * plane; ++v) {
                double g = ca * (R[v] - r0) + cb * (W[v] - w0);
                if constexpr (decltype(masked)::value) g = mask[v] != 0 ? g : 0.0;
                put_t<decltype(fused)::value>(a, v, static_cast<float>(g));
            }
        return 0;
    });
    return -nccv;
}

double lncc(const MetricArgs& a, int rz, int ry, int rx) {
    const index_t n = require_voxels(a);
    const Shape3& s = a.shape;
    const index_t nx = s.nx;
    const double inv_n = 1.0 / static_cast<double>(n);
    // LNCC is invariant to adding constants to R and W: centre on the masked means.
    const Moments m0 = moments(a, 0.0, 0.0);
    const double cr = m0.sr * inv_n, cw = m0.sw * inv_n;
    constexpr double kEps = 1e-5;
    // a, a muR, b, b muW (centred), every entry written by the first pass
    std::unique_ptr<float[]> terms(new float[static_cast<size_t>(4 * s.size())]);
    std::vector<double> part(static_cast<size_t>(s.nz * s.ny), 0.0);  // per voxel row
    const std::uint8_t* mask = a.mask;
    const float* R = a.reference;
    const float* W = a.warped;

    box_sums<6>(
        s, rz, ry, rx,
        [&](index_t k, index_t j, double* const* p) {
            const index_t v0 = (k * s.ny + j) * nx;
            for (index_t i = 0; i < nx; ++i) {
                const index_t v = v0 + i;
                if (!counted(mask, v)) {
                    p[0][i] = p[1][i] = p[2][i] = p[3][i] = p[4][i] = p[5][i] = 0.0;
                    continue;
                }
                const double r = R[v] - cr, w = W[v] - cw;
                p[0][i] = 1.0, p[1][i] = r, p[2][i] = w, p[3][i] = r * r, p[4][i] = w * w, p[5][i] = r * w;
            }
        },
        [&](index_t k, index_t j, const double* const* sm) {
            const index_t v0 = (k * s.ny + j) * nx;
            double acc = 0.0;
            for (index_t i = 0; i < nx; ++i) {
                const index_t v = v0 + i;
                float* t = terms.get() + 4 * v;
                t[0] = t[1] = t[2] = t[3] = 0.0f;
                if (!counted(mask, v)) continue;
                const double cnt = sm[0][i];
                if (!(cnt > 0.5)) continue;
                const double inv_cnt = 1.0 / cnt;
                const double mur = sm[1][i] * inv_cnt, muw = sm[2][i] * inv_cnt;
                const double cross = sm[5][i] - sm[1][i] * muw;
                const double var_r = std::max(0.0, sm[3][i] - sm[1][i] * mur);
                const double var_w = std::max(0.0, sm[4][i] - sm[2][i] * muw);
                const double den = var_r * var_w;
                if (!(den > kEps)) continue;
                const double ta = cross / den;  // d CC^2 / d cross / 2
                const double cc2 = cross * ta;
                const double tb = ta * ta * var_r;  // = CC^2 / var_w
                acc += cc2;
                t[0] = static_cast<float>(ta);
                t[1] = static_cast<float>(ta * mur);
                t[2] = static_cast<float>(tb);
                t[3] = static_cast<float>(tb * muw);
            }
            part[k * s.ny + j] = acc;
        });

    const double scale = -2.0 * inv_n;
    box_sums<4>(
        s, rz, ry, rx,
        [&](index_t k, index_t j, double* const* p) {
            const float* t = terms.get() + 4 * (k * s.ny + j) * nx;
            for (index_t i = 0; i < nx; ++i) {
                p[0][i] = t[4 * i], p[1][i] = t[4 * i + 1], p[2][i] = t[4 * i + 2], p[3][i] = t[4 * i + 3];
            }
        },
        [&](index_t k, index_t j, const double* const* sm) {
            const index_t v0 = (k * s.ny + j) * nx;
            for (index_t i = 0; i < nx; ++i) {
                const index_t v = v0 + i;
                if (!counted(mask, v)) {
                    put(a, v, 0.0);
                    continue;
                }
                const double r = R[v] - cr, w = W[v] - cw;
                put(a, v, scale * (r * sm[0][i] - sm[1][i] - w * sm[2][i] + sm[3][i]));
            }
        });
    return -ordered_sum(part) * inv_n;
}

double mattes_mi(const MetricArgs& a, int bins, double r0, double r1, double w0, double w1) {
    if (bins < 5) throw std::invalid_argument("bins must be >= 5");
    if (!(r1 > r0) || !(w1 > w0)) throw std::invalid_argument("intensity ranges must have max > min");
    const index_t n = require_voxels(a);
    const Shape3& s = a.shape;
    const index_t plane = s.ny * s.nx;
    const index_t nb = bins, nb2 = nb * nb;
    const double inv_n = 1.0 / static_cast<double>(n);
    const double rs = nb / (r1 - r0), ws = (nb - 3) / (w1 - w0);

    auto ref_bin = [&](index_t v) -> index_t {
        const double r = std::min(std::max(static_cast<double>(a.reference[v]), r0), r1);
        return std::min<index_t>(nb - 1, static_cast<index_t>((r - r0) * rs));
    };
    // continuous bin coordinate -> first bin of the support (i0 - 1) and fraction f
    auto warped_pos = [&](index_t v, index_t& b0, double& f, bool& inside) {
        const double w = a.warped[v];
        inside = w > w0 && w < w1;
        const double x = 1.0 + (std::min(std::max(w, w0), w1) - w0) * ws;
        index_t i0 = std::min<index_t>(nb - 3, static_cast<index_t>(x));
        f = x - static_cast<double>(i0);
        b0 = i0 - 1;
    };

    // Per slice: 4 sub-histograms (voxel index mod 4) break the store-to-load chains of
    // neighbouring voxels that fall in the same bins; merged in a fixed order.
    constexpr index_t kSub = 4;
    std::vector<double> part(static_cast<size_t>(s.nz * nb2), 0.0);
#pragma omp parallel num_threads(num_threads())
    {
        std::vector<double> sub(static_cast<size_t>(kSub * nb2));
#pragma omp for schedule(static)
        for (index_t k = 0; k < s.nz; ++k) {
            std::fill(sub.begin(), sub.end(), 0.0);
            for (index_t v = k * plane; v < (k + 1) * plane; ++v) {
                if (!counted(a.mask, v)) continue;
                index_t b0;
                double f, wt[4];
                bool inside;
                warped_pos(v, b0, f, inside);
                bspline_weights(f, wt);
                double* hr = sub.data() + (v % kSub) * nb2 + ref_bin(v) * nb + b0;
                hr[0] += wt[0], hr[1] += wt[1], hr[2] += wt[2], hr[3] += wt[3];
            }
            double* h = part.data() + k * nb2;
            for (index_t q = 0; q < nb2; ++q) h[q] = ((sub[q] + sub[nb2 + q]) + sub[2 * nb2 + q]) + sub[3 * nb2 + q];
        }
    }
    std::vector<double> joint(static_cast<size_t>(nb2), 0.0), pr(nb, 0.0), pw(nb, 0.0);
    for (index_t k = 0; k < s.nz; ++k)
        for (index_t q = 0; q < nb2; ++q) joint[q] += part[k * nb2 + q];
    for (index_t q = 0; q < nb2; ++q) {
        joint[q] *= inv_n;
        pr[q / nb] += joint[q];
        pw[q % nb] += joint[q];
    }
    double mi = 0.0;
    std::vector<double> dlog(static_cast<size_t>(nb2), 0.0);  // dMI/dp(a, b) = log(p / p_W(b))
    for (index_t q = 0; q < nb2; ++q) {
        const double p = joint[q];
        if (p > 0.0) {
            mi += p * std::log(p / (pr[q / nb] * pw[q % nb]));
            dlog[q] = std::log(p / pw[q % nb]);
        }
    }
    const double gscale = -inv_n * ws;  // d(-MI)/dW = -1/N sum_b dlog(a, b) dbeta/dx * dx/dW
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (index_t k = 0; k < s.nz; ++k)
        for (index_t v = k * plane; v < (k + 1) * plane; ++v) {
            if (!counted(a.mask, v)) {
                put(a, v, 0.0);
                continue;
            }
            index_t b0;
            double f, d[4];
            bool inside;
            warped_pos(v, b0, f, inside);
            if (!inside) {
                put(a, v, 0.0);
                continue;
            }
            bspline_derivatives(f, d);
            const double* g = dlog.data() + ref_bin(v) * nb + b0;
            put(a, v, gscale * (g[0] * d[0] + g[1] * d[1] + g[2] * d[2] + g[3] * d[3]));
        }
    return -mi;
}

}  // namespace ctreg
