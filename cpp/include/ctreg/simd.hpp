// Compiler switches for the run-time AVX2 dispatch shared by the kernels that use it.
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CTREG_X86_DISPATCH 1
#define CTREG_ALWAYS_INLINE __attribute__((always_inline))
#else
#define CTREG_X86_DISPATCH 0
#define CTREG_ALWAYS_INLINE
#endif

namespace ctreg {

bool simd_dispatch_enabled();  // warp.cpp; ctreg.ops can turn the dispatch off (tests)

// Whether an AVX2 kernel may run: dispatch enabled and the CPU has AVX2.
inline bool use_avx2() {
#if CTREG_X86_DISPATCH
    return simd_dispatch_enabled() && __builtin_cpu_supports("avx2");
#else
    return false;
#endif
}

}  // namespace ctreg
