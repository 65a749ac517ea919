// Shared, pybind11-free building blocks for ctreg's kernels.
//
// Conventions (see README "Conventions"):
//   * arrays are C-contiguous float32, axes (z, y, x); a voxel (k, j, i) lives at
//     data[(k * ny + j) * nx + i];
//   * spacings and gradient components are (z, y, x) in mm;
//   * a 4x4 matrix maps a homogeneous 3-vector in one frame to another; which frame is
//     "world" is the caller's business (the kernels only compose matrices and add vectors).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace ctreg {

using index_t = std::int64_t;

struct Shape3 {
    index_t nz = 0, ny = 0, nx = 0;
    index_t size() const { return nz * ny * nx; }
    index_t at(index_t k, index_t j, index_t i) const { return (k * ny + j) * nx + i; }
};

// v clamped to [0, n - 1]: the index of replicated-edge reads.
inline index_t clampi(index_t v, index_t n) { return v < 0 ? 0 : (v >= n ? n - 1 : v); }

struct Spacing3 {
    double z = 1.0, y = 1.0, x = 1.0;
};

// Row-major 4x4 homogeneous matrix; only the top three rows are used.
struct Mat4 {
    double m[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
    inline void apply(double a, double b, double c, double& o0, double& o1, double& o2) const {
        o0 = m[0][0] * a + m[0][1] * b + m[0][2] * c + m[0][3];
        o1 = m[1][0] * a + m[1][1] * b + m[1][2] * c + m[1][3];
        o2 = m[2][0] * a + m[2][1] * b + m[2][2] * c + m[2][3];
    }
    inline void apply_linear(double a, double b, double c, double& o0, double& o1, double& o2) const {
        o0 = m[0][0] * a + m[0][1] * b + m[0][2] * c;
        o1 = m[1][0] * a + m[1][1] * b + m[1][2] * c;
        o2 = m[2][0] * a + m[2][1] * b + m[2][2] * c;
    }
};

// Thread count used by every OpenMP region of the extension: the calling thread's own count
// when set (set_thread_num_threads: ctreg.ops.thread_limit, register(threads=...)), else the
// process default (set_num_threads: ctreg.set_num_threads), else OpenMP's default.  OpenMP
// evaluates num_threads(...) on the thread that opens the region, so a thread's own count never
// affects another thread's kernels.
int num_threads();
void set_num_threads(int n);
// 0 clears the calling thread's own count (the process default applies again).
void set_thread_num_threads(int n);
int thread_num_threads();  // the calling thread's own count, 0 when unset

}  // namespace ctreg
