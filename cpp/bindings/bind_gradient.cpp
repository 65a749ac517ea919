#include "common.hpp"

namespace ctreg::bind {

void bind_gradient(py::module_& m) {
    (void)m;  // kernels of this topic are bound here
}

}  // namespace ctreg::bind
