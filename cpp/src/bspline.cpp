// Cubic B-spline FFD kernels; see include/ctreg/bspline.hpp for the layout and the formulas.
#include "ctreg/bspline.hpp"

#include <vector>

namespace ctreg {
namespace {

// Per dense index along one axis: the first control index of its support and 4 weights.
struct AxisTable {
    std::vector<index_t> base;
    std::vector<double> w;  // 4 per index
};

AxisTable axis_table(index_t n, index_t t) {
    AxisTable a;
    a.base.resize(static_cast<size_t>(n));
    a.w.resize(static_cast<size_t>(4 * n));
    for (index_t k = 0; k < n; ++k) {
        a.base[k] = k / t;
        bspline_weights(static_cast<double>(k % t) / static_cast<double>(t), &a.w[4 * k]);
    }
    return a;
}

}  // namespace

Shape3 bspline_grid_shape(const Shape3& dense, const Int3& t) {
    return Shape3{(dense.nz - 1) / t.z + 4, (dense.ny - 1) / t.y + 4, (dense.nx - 1) / t.x + 4};
}

void bspline_to_dense(const float* coeffs, const Shape3& grid, const Int3& t, float* out,
                      const Shape3& dense) {
    const AxisTable az = axis_table(dense.nz, t.z), ay = axis_table(dense.ny, t.y),
                    ax = axis_table(dense.nx, t.x);
    const index_t row3 = grid.nx * 3, plane3 = grid.ny * row3;
    const index_t nz = dense.nz, ny = dense.ny, nx = dense.nx;
#pragma omp parallel num_threads(num_threads())
    {
        std::vector<double> zp(static_cast<size_t>(plane3)), yr(static_cast<size_t>(row3));
#pragma omp for schedule(static)
        for (index_t k = 0; k < nz; ++k) {
            const double* wz = &az.w[4 * k];
            const float* c0 = coeffs + az.base[k] * plane3;
            const float* c1 = c0 + plane3;
            const float* c2 = c1 + plane3;
            const float* c3 = c2 + plane3;
            for (index_t q = 0; q < plane3; ++q)
                zp[q] = wz[0] * c0[q] + wz[1] * c1[q] + wz[2] * c2[q] + wz[3] * c3[q];
            for (index_t j = 0; j < ny; ++j) {
                const double* wy = &ay.w[4 * j];
                const double* r0 = zp.data() + ay.base[j] * row3;
                const double* r1 = r0 + row3;
                const double* r2 = r1 + row3;
                const double* r3 = r2 + row3;
                for (index_t q = 0; q < row3; ++q)
                    yr[q] = wy[0] * r0[q] + wy[1] * r1[q] + wy[2] * r2[q] + wy[3] * r3[q];
                float* o = out + ((k * ny + j) * nx) * 3;
                for (index_t i = 0; i < nx; ++i) {
                    const double* wx = &ax.w[4 * i];
                    const double* y = yr.data() + ax.base[i] * 3;
                    for (int c = 0; c < 3; ++c)
                        o[3 * i + c] = static_cast<float>(wx[0] * y[c] + wx[1] * y[3 + c] +
                                                          wx[2] * y[6 + c] + wx[3] * y[9 + c]);
                }
            }
        }
    }
}

void bspline_adjoint(const float* field, const Shape3& dense, const Int3& t, float* out,
                     const Shape3& grid) {
    const AxisTable az = axis_table(dense.nz, t.z), ay = axis_table(dense.ny, t.y),
                    ax = axis_table(dense.nx, t.x);
    const index_t row3 = grid.nx * 3, plane3 = grid.ny * row3;
    const index_t nz = dense.nz, ny = dense.ny, nx = dense.nx;
    const index_t groups = (nz - 1) / t.z + 1;  // dense slices k with k / tz == g
    // partial[g][l]: contribution of group g to control plane g + l.
    std::vector<double> partial(static_cast<size_t>(groups * 4 * plane3), 0.0);
#pragma omp parallel num_threads(num_threads())
    {
        std::vector<double> s(static_cast<size_t>(plane3)), r(static_cast<size_t>(row3));
#pragma omp for schedule(dynamic, 1)
        for (index_t g = 0; g < groups; ++g) {
            double* pg = partial.data() + g * 4 * plane3;
            const index_t k_end = std::min(nz, (g + 1) * t.z);
            for (index_t k = g * t.z; k < k_end; ++k) {
                std::fill(s.begin(), s.end(), 0.0);
                for (index_t j = 0; j < ny; ++j) {
                    std::fill(r.begin(), r.end(), 0.0);
                    const float* f = field + ((k * ny + j) * nx) * 3;
                    for (index_t i = 0; i < nx; ++i) {
                        const double* wx = &ax.w[4 * i];
                        double* y = r.data() + ax.base[i] * 3;
                        for (int c = 0; c < 3; ++c) {
                            const double v = f[3 * i + c];
                            y[c] += wx[0] * v;
                            y[3 + c] += wx[1] * v;
                            y[6 + c] += wx[2] * v;
                            y[9 + c] += wx[3] * v;
                        }
                    }
                    const double* wy = &ay.w[4 * j];
                    double* s0 = s.data() + ay.base[j] * row3;
                    for (int m = 0; m < 4; ++m) {
                        double* sm = s0 + m * row3;
                        const double w = wy[m];
                        for (index_t q = 0; q < row3; ++q) sm[q] += w * r[q];
                    }
                }
                const double* wz = &az.w[4 * k];
                for (int l = 0; l < 4; ++l) {
                    double* pl = pg + l * plane3;
                    const double w = wz[l];
                    for (index_t q = 0; q < plane3; ++q) pl[q] += w * s[q];
                }
            }
        }
#pragma omp for schedule(static)
        for (index_t a = 0; a < grid.nz; ++a) {
            float* o = out + a * plane3;
            for (index_t q = 0; q < plane3; ++q) {
                double sum = 0.0;
                for (index_t l = 0; l < 4; ++l) {
                    const index_t g = a - l;
                    if (g >= 0 && g < groups) sum += partial[(g * 4 + l) * plane3 + q];
                }
                o[q] = static_cast<float>(sum);
            }
        }
    }
}

double bending_energy(const float* coeffs, const Shape3& grid, const Int3& t, const Spacing3& voxel_mm,
                      float* grad) {
    const index_t cz = grid.nz, cy = grid.ny, cx = grid.nx;
    const index_t plane = cy * cx;
    // 1-D stencils over control offsets (-1, 0, +1) at a control point (basis at f = 0).
    const double hz = t.z * voxel_mm.z, hy = t.y * voxel_mm.y, hx = t.x * voxel_mm.x;
    const double V[3] = {1.0 / 6.0, 4.0 / 6.0, 1.0 / 6.0};
    const double D1z[3] = {-0.5 / hz, 0.0, 0.5 / hz}, D1y[3] = {-0.5 / hy, 0.0, 0.5 / hy},
                 D1x[3] = {-0.5 / hx, 0.0, 0.5 / hx};
    const double D2z[3] = {1.0 / (hz * hz), -2.0 / (hz * hz), 1.0 / (hz * hz)},
                 D2y[3] = {1.0 / (hy * hy), -2.0 / (hy * hy), 1.0 / (hy * hy)},
                 D2x[3] = {1.0 / (hx * hx), -2.0 / (hx * hx), 1.0 / (hx * hx)};
    // Terms: zz, yy, xx (weight 1), zy, zx, yx (weight 2).
    const double* KZ[6] = {D2z, V, V, D1z, D1z, V};
    const double* KY[6] = {V, D2y, V, D1y, V, D1y};
    const double* KX[6] = {V, V, D2x, V, D1x, D1x};
    const double WT[6] = {1, 1, 1, 2, 2, 2};

    const index_t npts = (cz - 2) * (cy - 2) * (cx - 2);
    // second derivatives at every interior point, [point][term][comp]; float: only the gradient reads them
    std::vector<float> terms(static_cast<size_t>(cz * plane * 18), 0.0f);
    std::vector<double> partial(static_cast<size_t>(cz), 0.0);
#pragma omp parallel num_threads(num_threads())
    {
#pragma omp for schedule(static)
        for (index_t a = 1; a < cz - 1; ++a) {
            double acc = 0.0;
            for (index_t b = 1; b < cy - 1; ++b)
                for (index_t c = 1; c < cx - 1; ++c) {
                    float* tp = terms.data() + ((a * cy + b) * cx + c) * 18;
                    for (int term = 0; term < 6; ++term) {
                        double v[3] = {0, 0, 0};
                        for (int dz = 0; dz < 3; ++dz)
                            for (int dy = 0; dy < 3; ++dy) {
                                const double wzy = KZ[term][dz] * KY[term][dy];
                                const float* row = coeffs + (((a + dz - 1) * cy + (b + dy - 1)) * cx + (c - 1)) * 3;
                                for (int dx = 0; dx < 3; ++dx) {
                                    const double w = wzy * KX[term][dx];
                                    v[0] += w * row[3 * dx];
                                    v[1] += w * row[3 * dx + 1];
                                    v[2] += w * row[3 * dx + 2];
                                }
                            }
                        for (int comp = 0; comp < 3; ++comp) {
                            tp[term * 3 + comp] = static_cast<float>(v[comp]);
                            acc += WT[term] * v[comp] * v[comp];
                        }
                    }
                }
            partial[a] = acc;
        }
        if (grad != nullptr) {
            const double scale = npts > 0 ? 2.0 / static_cast<double>(npts) : 0.0;
#pragma omp for schedule(static)
            for (index_t pz = 0; pz < cz; ++pz)
                for (index_t py = 0; py < cy; ++py)
                    for (index_t px = 0; px < cx; ++px) {
                        double g[3] = {0, 0, 0};
                        for (index_t qz = std::max<index_t>(1, pz - 1); qz <= std::min(cz - 2, pz + 1); ++qz)
                            for (index_t qy = std::max<index_t>(1, py - 1); qy <= std::min(cy - 2, py + 1); ++qy)
                                for (index_t qx = std::max<index_t>(1, px - 1); qx <= std::min(cx - 2, px + 1); ++qx) {
                                    const float* tp = terms.data() + ((qz * cy + qy) * cx + qx) * 18;
                                    const int dz = static_cast<int>(pz - qz + 1), dy = static_cast<int>(py - qy + 1),
                                              dx = static_cast<int>(px - qx + 1);
                                    for (int term = 0; term < 6; ++term) {
                                        const double w = WT[term] * KZ[term][dz] * KY[term][dy] * KX[term][dx];
                                        g[0] += w * tp[term * 3];
                                        g[1] += w * tp[term * 3 + 1];
                                        g[2] += w * tp[term * 3 + 2];
                                    }
                                }
                        float* o = grad + ((pz * cy + py) * cx + px) * 3;
                        for (int comp = 0; comp < 3; ++comp) o[comp] = static_cast<float>(scale * g[comp]);
                    }
        }
    }
    double total = 0.0;
    for (index_t a = 0; a < cz; ++a) total += partial[a];
    return npts > 0 ? total / static_cast<double>(npts) : 0.0;
}

}  // namespace ctreg
