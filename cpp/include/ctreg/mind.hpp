// MIND-SSC descriptors, block-matching costs over a discrete displacement set and the exact
// argmin of the coupled-convex step (see docs/mind.md and ctreg.mind for the definitions).
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// Number of MIND-SSC channels (pairs of the six-neighbourhood that are not opposite).
constexpr int kMindChannels = 12;

// The two neighbours (z, y, x unit offsets, times the distance) of channel c (0..11):
// neighbours n0..n5 = -z, +z, -y, +y, -x, +x; channels = pairs (p, q), p < q, in lexicographic
// order, skipping the opposite pairs (0,1), (2,3), (4,5).
void mind_pair(int c, int a[3], int b[3]);

// out: (nz, ny, nx, 12) float32, see ctreg.mind.mind_ssc for the definition.
void mind_ssc(const float* image, const Shape3& s, int radius, int distance, float* out);

struct BlockMatchArgs {
    const float* ref = nullptr;   // (nz, ny, nx, C)
    const float* flt = nullptr;   // (nz, ny, nx, C)
    Shape3 shape;
    int channels = 1;
    int grid_step = 4;            // control point g at voxel g * grid_step
    int block_radius = 2;
    int block_step = 2;           // block voxels p + o, o in {-B, -B + step, ...} (<= B)
    int search_radius = 6;
    int search_step = 1;          // offsets (k - K) * search_step, K = search_radius / search_step
    const std::uint8_t* mask = nullptr;  // optional (nz, ny, nx)
    Shape3 grid;                  // ceil(shape / grid_step)
    float* cost = nullptr;        // (gz, gy, gx, L), L = (2K + 1)^3
    std::uint8_t* active = nullptr;  // (gz, gy, gx)
};

void block_match_cost(const BlockMatchArgs& a);

// For each of n points g: idx[g] = the first l minimising
//   cost[g, l] + theta * ((disp[l,0] - v[g,0])^2 + (disp[l,1] - v[g,1])^2 + (disp[l,2] - v[g,2])^2)
// (float32, in that order), u[g] = disp[idx[g]].
void coupled_argmin(const float* cost, index_t n, index_t L, const float* disp, const float* v,
                    float theta, std::int32_t* idx, float* u);

}  // namespace ctreg
