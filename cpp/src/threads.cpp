#include "ctreg/common.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace ctreg {
namespace {
std::atomic<int> g_threads{0};  // 0: not set yet -> OpenMP's default
thread_local int t_threads = 0;  // 0: this thread follows g_threads
}

int num_threads() {
    if (t_threads > 0) return t_threads;
    int n = g_threads.load(std::memory_order_relaxed);
    if (n > 0) return n;
#ifdef _OPENMP
    return std::max(1, omp_get_max_threads());
#else
    return 1;
#endif
}

void set_num_threads(int n) { g_threads.store(n > 0 ? n : 0, std::memory_order_relaxed); }

void set_thread_num_threads(int n) { t_threads = n > 0 ? n : 0; }

int thread_num_threads() { return t_threads; }

}  // namespace ctreg
