#include "common.hpp"

namespace ctreg::bind {

void bind_threads(py::module_& m) {
    m.def("set_num_threads", &ctreg::set_num_threads, py::arg("n"),
          "Threads for every native kernel; 0 restores OpenMP's default.");
    m.def("get_num_threads", &ctreg::num_threads);
    m.def("has_openmp", []() {
#ifdef _OPENMP
        return true;
#else
        return false;
#endif
    });
}

}  // namespace ctreg::bind
