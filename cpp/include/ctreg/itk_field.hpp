// One chunk of transform.h5's displacement field (ctreg/io/itk_transform.py): the field
// w = A^-1 U + start(row) + along(x) as float32, byte-shuffled for HDF5's shuffle filter.
#pragma once

#include <cstdint>

#include "ctreg/common.hpp"

namespace ctreg {

// For rows r < nrows of u ((nrows, nx, 3) float32) and components c:
//   w = fma(u2, b[6 + c], fma(u1, b[3 + c], u0 * b[c]))   (NumPy's float32 u @ b, as OpenBLAS
//   computes it), then w = (w + start[3 r + c]) + along[3 i + c], each rounded to float32;
// out holds the 4 byte planes of the chunk's `size` floats (the tail past nrows * nx * 3 is
// 0): out[p * size + q] = byte p (little-endian) of float q.  Bit for bit the same on every
// CPU (fma is exact; AVX2+FMA when available, else std::fma).
void itk_field_chunk(const float* u, index_t nrows, index_t nx, const float b[9], const float* start,
                     const float* along, index_t size, std::uint8_t* out);

}  // namespace ctreg
