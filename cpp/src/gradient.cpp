#include "ctreg/gradient.hpp"

namespace ctreg {

void gradient(const float* image, const Shape3& s, const Spacing3& sp, float* out) {
    const GradientWeights w(sp);
#pragma omp parallel for collapse(2) schedule(dynamic, 32) num_threads(ctreg::num_threads())
    for (index_t k = 0; k < s.nz; ++k)
        for (index_t j = 0; j < s.ny; ++j) gradient_row(image, s, w, k, j, out + s.at(k, j, 0) * 3);
}

}  // namespace ctreg
