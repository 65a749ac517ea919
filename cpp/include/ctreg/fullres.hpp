// One z slab of register()'s full-resolution step (src/ctreg/fullres.py), in one call: the
// existing kernels run in the same order on the same values, writing straight into the
// outputs (no per-slab temporaries, no copies).
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

struct FullresSlab {
    // the field u (fs, 3) on the last level's grid, resampled at field index first + q * step
    const float* u;
    Shape3 fs;
    double step[3], first[3];
    // slab rows: halo [h0, h1), core [k0, k1) of the reference grid (ny, nx)
    index_t h0, h1, k0, k1, ny, nx;
    Spacing3 spacing;  // reference grid, mm
    // warped: resample_displacement(source, u core, out_to_frame, to_index, order 1, sentinel)
    const float* source;
    Shape3 source_shape;
    Mat4 out_to_frame, to_index;
    float sentinel, invalid_below, fill_hu, det_a;
    // displacement: affine_field(u core, vec, idx)
    double vec[9], idx[12];
    // buffers: uh ((h1 - h0) ny nx 3), jh ((h1 - h0) ny nx)
    float* uh;
    float* jh;
    // outputs, whole reference grid: warped, valid (warped > invalid_below; fill_hu elsewhere),
    // displacement (3 per voxel); jacobian (det(I + grad u) * det_a) from grid slice
    // jacobian_first on (0: the whole grid; k0: a buffer for this slab's core)
    float* warped;
    std::uint8_t* valid;
    float* displacement;
    float* jacobian;
    index_t jacobian_first;
};

void fullres_slab(const FullresSlab& a);

}  // namespace ctreg
