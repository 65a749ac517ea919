// Gaussian smoothing on a subsampling lattice (see ctreg/prep.hpp).
//
// Each kept value is the same sequence of float operations as in smooth.cpp's filter_run:
// acc = w0 c[m]; acc += w_q (c[m + q] + c[m - q]) for q = 1..r, the neighbours clamped to the
// volume (replicated edges), the passes in the order z, y, x.  Compiled without FMA
// contraction (no -march, no -ffast-math), like smooth.cpp.  One output slice per task: every
// value is a fixed function of the input, identical on any thread count.
#include "ctreg/prep.hpp"

#include <algorithm>
#include <vector>

#include "ctreg/smooth.hpp"

namespace ctreg {

namespace {
std::vector<float> kernel_f(double sigma, double truncate) {
    const std::vector<double> w = gaussian_kernel(sigma, truncate);
    return std::vector<float>(w.begin(), w.end());
}
}  // namespace

namespace {
// The rows of a C-contiguous image: read in place.
struct PlainRows {
    static constexpr bool in_place = true;
    const float* array;
    index_t ny, nx;
    const float* row(index_t k, index_t j, float*) const { return array + (k * ny + j) * nx; }
};

// The rows of a SourceOp image: computed into the caller's buffer.
struct OpRows {
    static constexpr bool in_place = false;
    const SourceOp& op;
    index_t nx;
    const float* row(index_t k, index_t j, float* buf) const {
        source_row(op, k, j, nx, buf);
        return buf;
    }
};

template <class Rows>
void smooth_subsample_rows(const Rows& rows, const Shape3& s, const double sigma_vox[3], double truncate,
                           const index_t factors[3], float* out) {
    const std::vector<float> wz = kernel_f(sigma_vox[0], truncate);
    const std::vector<float> wy = kernel_f(sigma_vox[1], truncate);
    const std::vector<float> wx = kernel_f(sigma_vox[2], truncate);
    const index_t rz = index_t(wz.size() / 2), ry = index_t(wy.size() / 2), rx = index_t(wx.size() / 2);
    const float* wzc = wz.data() + rz;
    const float* wyc = wy.data() + ry;
    const float* wxc = wx.data() + rx;
    const index_t fz = factors[0], fy = factors[1], fx = factors[2];
    const index_t nzo = (s.nz + fz - 1) / fz, nyo = (s.ny + fy - 1) / fy, nxo = (s.nx + fx - 1) / fx;
    const index_t plane = s.ny * s.nx;
    const bool need_plane = rz > 0 || !Rows::in_place;
#pragma omp parallel num_threads(ctreg::num_threads())
    {
        std::vector<float> zbuf(need_plane ? std::size_t(plane) : 0);
        std::vector<float> ybuf(ry > 0 ? std::size_t(s.nx) : 0);
        std::vector<float> ra(Rows::in_place ? 0 : std::size_t(s.nx)), rb(ra.size());
#pragma omp for schedule(dynamic, 1)
        for (index_t ko = 0; ko < nzo; ++ko) {
            const index_t k = ko * fz;
            const float* zs = nullptr;
            if constexpr (Rows::in_place) {
                if (!need_plane) zs = rows.row(k, 0, nullptr);  // the kept slice itself
            }
            if (need_plane) {
                // per value: w0 c, then += w_q (c[+q] + c[-q]) for q = 1..r, as in filter_run
                for (index_t j = 0; j < s.ny; ++j) {
                    float* __restrict zr = zbuf.data() + j * s.nx;
                    const float* c = rows.row(k, j, ra.data());
                    if (rz == 0) {
                        for (index_t i = 0; i < s.nx; ++i) zr[i] = c[i];
                        continue;
                    }
                    const float w0 = wzc[0];
                    for (index_t i = 0; i < s.nx; ++i) zr[i] = w0 * c[i];
                    for (index_t q = 1; q <= rz; ++q) {
                        const float wq = wzc[q];
                        const float* __restrict a = rows.row(std::min(k + q, s.nz - 1), j, ra.data());
                        const float* __restrict z = rows.row(std::max<index_t>(k - q, 0), j, rb.data());
                        for (index_t i = 0; i < s.nx; ++i) zr[i] += wq * (a[i] + z[i]);
                    }
                }
                zs = zbuf.data();
            }
            float* orow = out + ko * nyo * nxo;
            for (index_t jo = 0; jo < nyo; ++jo, orow += nxo) {
                const index_t j = jo * fy;
                const float* ys = zs + j * s.nx;
                if (ry > 0) {
                    float* __restrict yb = ybuf.data();
                    const float w0 = wyc[0];
                    for (index_t i = 0; i < s.nx; ++i) yb[i] = w0 * ys[i];
                    for (index_t q = 1; q <= ry; ++q) {
                        const float wq = wyc[q];
                        const float* __restrict a = zs + std::min(j + q, s.ny - 1) * s.nx;
                        const float* __restrict z = zs + std::max<index_t>(j - q, 0) * s.nx;
                        for (index_t i = 0; i < s.nx; ++i) yb[i] += wq * (a[i] + z[i]);
                    }
                    ys = yb;
                }
                for (index_t io = 0; io < nxo; ++io) {
                    const index_t i = io * fx;
                    float acc = wxc[0] * ys[i];
                    for (index_t q = 1; q <= rx; ++q)
                        acc += wxc[q] * (ys[std::min(i + q, s.nx - 1)] + ys[std::max<index_t>(i - q, 0)]);
                    orow[io] = acc;
                }
            }
        }
    }
}
}  // namespace

namespace {
// One fused, vectorisable pass per case: no per-voxel test of which inputs exist.
template <bool kValid, bool kMask>
void image_row(const SourceOp& op, index_t k, index_t j, index_t nx, float* __restrict out) {
    const float* __restrict p = op.image + k * op.isz + j * op.isy;
    const std::uint8_t* __restrict v = kValid ? op.valid + k * op.vsz + j * op.vsy : nullptr;
    const std::uint8_t* __restrict m = kMask ? op.mask + k * op.msz + j * op.msy : nullptr;
    const float lo = op.lo, hi = op.hi, fill = op.fill, outside = op.outside;
    for (index_t i = 0; i < nx; ++i) {
        float x = p[i];
        x = x < lo ? lo : x;
        x = x > hi ? hi : x;
        if constexpr (kValid) x = v[i] ? x : fill;
        if constexpr (kMask) x = m[i] ? x : outside;
        out[i] = x;
    }
}
}  // namespace

void source_row(const SourceOp& op, index_t k, index_t j, index_t nx, float* __restrict out) {
    if (!op.image) {
        const std::uint8_t* __restrict m = op.mask ? op.mask + k * op.msz + j * op.msy : nullptr;
        const float inside = op.inside, outside = op.outside;
        if (m)
            for (index_t i = 0; i < nx; ++i) out[i] = m[i] ? inside : outside;
        else
            for (index_t i = 0; i < nx; ++i) out[i] = inside;
    } else if (op.valid) {
        op.mask ? image_row<true, true>(op, k, j, nx, out) : image_row<true, false>(op, k, j, nx, out);
    } else {
        op.mask ? image_row<false, true>(op, k, j, nx, out) : image_row<false, false>(op, k, j, nx, out);
    }
}

void smooth_subsample(const float* array, const Shape3& s, const double sigma_vox[3], double truncate,
                      const index_t factors[3], float* out) {
    smooth_subsample_rows(PlainRows{array, s.ny, s.nx}, s, sigma_vox, truncate, factors, out);
}

void smooth_subsample_source(const SourceOp& op, const Shape3& s, const double sigma_vox[3], double truncate,
                             const index_t factors[3], float* out) {
    smooth_subsample_rows(OpRows{op, s.nx}, s, sigma_vox, truncate, factors, out);
}

void clip_fill_view(const float* image, index_t isz, index_t isy, const std::uint8_t* valid, index_t vsz,
                    index_t vsy, const Shape3& s, float lo, float hi, float fill, float* out) {
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < s.nz; ++k) {
        for (index_t j = 0; j < s.ny; ++j) {
            const float* p = image + k * isz + j * isy;
            float* o = out + (k * s.ny + j) * s.nx;
            const std::uint8_t* v = valid ? valid + k * vsz + j * vsy : nullptr;
            for (index_t i = 0; i < s.nx; ++i) {
                float x = p[i];
                if (x < lo) x = lo;
                if (x > hi) x = hi;
                o[i] = (v && !v[i]) ? fill : x;
            }
        }
    }
}

void map_piecewise_linear(const float* image, index_t n, const double* xp, const double* fp, index_t m,
                          float above, float* out) {
    std::vector<double> slope(static_cast<std::size_t>(m - 1));
    for (index_t j = 0; j + 1 < m; ++j) slope[j] = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    const double* xe = xp + m;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t i = 0; i < n; ++i) {
        const float v = image[i];
        if (!(v > above)) {  // also NaN
            out[i] = v;
            continue;
        }
        const double x = v;
        double r;
        if (x < xp[0]) {
            r = fp[0];
        } else if (x >= xp[m - 1]) {
            r = fp[m - 1];
        } else {
            // j: the last knot <= x (j < m - 1 here)
            const index_t j = static_cast<index_t>(std::upper_bound(xp, xe, x) - xp) - 1;
            if (xp[j] == x) {
                r = fp[j];
            } else {
                r = slope[j] * (x - xp[j]) + fp[j];
                if (r != r) r = slope[j] * (x - xp[j + 1]) + fp[j + 1];
            }
        }
        out[i] = static_cast<float>(r);
    }
}

}  // namespace ctreg
