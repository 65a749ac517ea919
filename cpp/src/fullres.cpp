// One slab of the full-resolution step (see ctreg/fullres.hpp).  Each kernel is the one that
// src/ctreg/fullres.py called before, with the same arguments: the outputs are bit-identical;
// the element-wise tails (Jacobian scaling, validity, fill) are the same float operations as
// NumPy's.  Every value is a fixed function of the input: identical on any thread count.
#include "ctreg/fullres.hpp"

#include <cstring>

#include "ctreg/demons.hpp"
#include "ctreg/fields.hpp"
#include "ctreg/warp.hpp"

namespace ctreg {

void fullres_slab(const FullresSlab& a) {
    const index_t plane = a.ny * a.nx;
    const Shape3 halo{a.h1 - a.h0, a.ny, a.nx};
    const Shape3 core{a.k1 - a.k0, a.ny, a.nx};
    resample_field(a.u, a.fs, a.step, a.first, a.uh, halo);
    const float* uc = a.uh + (a.k0 - a.h0) * plane * 3;
    float* w = a.warped + a.k0 * plane;
    resample_displacement(a.source, a.source_shape, uc, core, a.out_to_frame, a.to_index, nullptr, w, core, 1,
                          a.sentinel);
    jacobian_determinant(a.uh, halo, a.spacing, a.jh);
    affine_field(uc, core, a.vec, a.idx, a.displacement + a.k0 * plane * 3);
    const float* jc = a.jh + (a.k0 - a.h0) * plane;
    float* jo = a.jacobian + (a.k0 - a.jacobian_first) * plane;
    std::uint8_t* v = a.valid + a.k0 * plane;
    const index_t n = core.size();
    const float det_a = a.det_a, lo = a.invalid_below, fill = a.fill_hu;
#pragma omp parallel for schedule(static) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < core.nz; ++k) {
        const index_t e = (k + 1) * plane < n ? (k + 1) * plane : n;
        for (index_t t = k * plane; t < e; ++t) {
            jo[t] = jc[t] * det_a;
            const bool ok = w[t] > lo;
            v[t] = ok ? 1 : 0;
            if (!ok) w[t] = fill;
        }
    }
}

}  // namespace ctreg
