#include "common.hpp"

namespace ctreg::bind {

void bind_threads(py::module_& m) {
    m.def("set_num_threads", &ctreg::set_num_threads, py::arg("n"),
          "Threads for every native kernel; 0 restores OpenMP's default.");
    m.def("get_num_threads", &ctreg::num_threads,
          "Threads the calling thread's kernels use (its own count, else the process default).");
    m.def("set_thread_num_threads", &ctreg::set_thread_num_threads, py::arg("n"),
          "Threads for the native kernels called from this thread only; 0 clears it.");
    m.def("get_thread_num_threads", &ctreg::thread_num_threads,
          "This thread's own count (0: it follows the process default).");
    m.def("has_openmp", []() {
#ifdef _OPENMP
        return true;
#else
        return false;
#endif
    });
}

}  // namespace ctreg::bind
