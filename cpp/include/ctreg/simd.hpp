// Compiler switches for the run-time AVX2 dispatch shared by the kernels that use it.
#pragma once

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define CTREG_X86_DISPATCH 1
#define CTREG_ALWAYS_INLINE __attribute__((always_inline))
#else
#define CTREG_X86_DISPATCH 0
#define CTREG_ALWAYS_INLINE
#endif
