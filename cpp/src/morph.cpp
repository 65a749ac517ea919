#include "ctreg/morph.hpp"

#include <algorithm>
#include <vector>

namespace ctreg {

void dilate_rows(const std::uint8_t* mask, const Shape3& s, const int* reach, index_t rz, index_t ry,
                 std::uint8_t* out) {
    const index_t nz = s.nz, ny = s.ny, nx = s.nx, rows = nz * ny;
    constexpr int kFar = 255;  // "no mask voxel within 254 along x"
    // gx: the distance along x to the nearest mask voxel of the same row, capped at kFar;
    // any_in_row: whether the row holds a mask voxel at all (rows without one are skipped)
    std::vector<std::uint8_t> gx(static_cast<std::size_t>(s.size()));
    std::vector<std::uint8_t> any_in_row(static_cast<std::size_t>(rows));
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t r = 0; r < rows; ++r) {
        const std::uint8_t* m = mask + r * nx;
        std::uint8_t* g = gx.data() + r * nx;
        int d = kFar;
        bool any = false;
        for (index_t i = 0; i < nx; ++i) {
            d = m[i] ? 0 : std::min(d + 1, kFar);
            any |= m[i] != 0;
            g[i] = static_cast<std::uint8_t>(d);
        }
        any_in_row[r] = any;
        d = kFar;
        for (index_t i = nx - 1; i >= 0; --i) {
            d = m[i] ? 0 : std::min(d + 1, kFar);
            if (d < g[i]) g[i] = static_cast<std::uint8_t>(d);
        }
    }
    const index_t wy = 2 * ry + 1;
#pragma omp parallel for schedule(dynamic, 4) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < nz; ++k) {
        for (index_t j = 0; j < ny; ++j) {
            std::uint8_t* o = out + (k * ny + j) * nx;
            std::fill(o, o + nx, std::uint8_t(0));
            for (index_t dz = -rz; dz <= rz; ++dz) {
                const index_t kk = k + dz;
                if (kk < 0 || kk >= nz) continue;
                for (index_t dy = -ry; dy <= ry; ++dy) {
                    const index_t jj = j + dy;
                    const int w = reach[(dz + rz) * wy + (dy + ry)];
                    if (w < 0 || jj < 0 || jj >= ny || !any_in_row[kk * ny + jj]) continue;
                    const std::uint8_t* g = gx.data() + (kk * ny + jj) * nx;
                    const std::uint8_t lim = static_cast<std::uint8_t>(w);
                    for (index_t i = 0; i < nx; ++i) o[i] |= static_cast<std::uint8_t>(g[i] <= lim);
                }
            }
        }
    }
}

}  // namespace ctreg
