#include "ctreg/itk_field.hpp"

#include <cmath>
#include <cstring>

#include "ctreg/simd.hpp"

namespace ctreg {
namespace {

template <bool kHardwareFma>
CTREG_ALWAYS_INLINE inline float fma_f(float a, float b, float c) {
    if constexpr (kHardwareFma) {
        return __builtin_fmaf(a, b, c);
    } else {
        return std::fma(a, b, c);
    }
}

template <bool kHardwareFma>
CTREG_ALWAYS_INLINE inline void chunk_impl(const float* u, index_t nrows, index_t nx, const float b[9],
                                           const float* start, const float* along, index_t size,
                                           std::uint8_t* out) {
    std::uint8_t* p0 = out;
    std::uint8_t* p1 = out + size;
    std::uint8_t* p2 = out + 2 * size;
    std::uint8_t* p3 = out + 3 * size;
    index_t q = 0;
    for (index_t r = 0; r < nrows; ++r) {
        const float* row = u + r * nx * 3;
        const float* st = start + 3 * r;
        for (index_t i = 0; i < nx; ++i) {
            const float u0 = row[3 * i], u1 = row[3 * i + 1], u2 = row[3 * i + 2];
            for (int c = 0; c < 3; ++c, ++q) {
                float w = fma_f<kHardwareFma>(u2, b[6 + c], fma_f<kHardwareFma>(u1, b[3 + c], u0 * b[c]));
                w = w + st[c];
                w = w + along[3 * i + c];
                std::uint32_t bits;
                std::memcpy(&bits, &w, 4);
                p0[q] = static_cast<std::uint8_t>(bits);
                p1[q] = static_cast<std::uint8_t>(bits >> 8);
                p2[q] = static_cast<std::uint8_t>(bits >> 16);
                p3[q] = static_cast<std::uint8_t>(bits >> 24);
            }
        }
    }
    for (int p = 0; p < 4; ++p) std::memset(out + p * size + q, 0, static_cast<std::size_t>(size - q));
}

#if CTREG_X86_DISPATCH
__attribute__((target("avx2,fma"))) void chunk_fma(const float* u, index_t nrows, index_t nx, const float b[9],
                                                   const float* start, const float* along, index_t size,
                                                   std::uint8_t* out) {
    chunk_impl<true>(u, nrows, nx, b, start, along, size, out);
}
#endif

}  // namespace

void itk_field_chunk(const float* u, index_t nrows, index_t nx, const float b[9], const float* start,
                     const float* along, index_t size, std::uint8_t* out) {
#if CTREG_X86_DISPATCH
    if (use_avx2() && __builtin_cpu_supports("fma")) {
        chunk_fma(u, nrows, nx, b, start, along, size, out);
        return;
    }
#endif
    chunk_impl<false>(u, nrows, nx, b, start, along, size, out);
}

}  // namespace ctreg
