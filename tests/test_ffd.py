"""ctreg.ffd.minimize_lbfgsb: scipy's L-BFGS-B, plus a stop when the line search stalls."""

import numpy as np
from scipy.optimize import minimize

from ctreg.ffd import STALL_EVALUATIONS, minimize_lbfgsb, stop_when_slow

OPTIONS = {"maxiter": 15, "maxfun": 40, "maxls": 8, "maxcor": 8, "ftol": 1e-10, "gtol": 1e-12}


def _quadratic():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.5, 4.0, 50)
    t = rng.normal(0.0, 2.0, 50)

    def fun(x):
        return float(0.5 * np.sum(a * (x - t) ** 2) + 1.0), a * (x - t)

    return fun, t


def test_same_result_as_scipy_when_the_run_does_not_stall():
    fun, _ = _quadratic()
    bound = np.full(50, 1.5)
    x0 = np.zeros(50)
    for bounds in (None, (-bound, bound)):
        kw = {} if bounds is None else {"bounds": list(zip(*bounds))}
        ref = minimize(fun, x0, jac=True, method="L-BFGS-B", options=OPTIONS, **kw)
        x, cost, nit = minimize_lbfgsb(
            fun,
            x0,
            options=OPTIONS,
            callback=stop_when_slow(0.0),
            bounds=None if bounds is None else list(zip(*bounds)),
        )
        assert np.array_equal(x, ref.x)
        assert cost == float(ref.fun) and nit == ref.nit


def test_a_stalled_line_search_ends_at_the_best_point_evaluated():
    # the gradient points the wrong way: no step along -gradient lowers the cost, so scipy's
    # line search fails after many evaluations; the wrapper stops STALL_EVALUATIONS after the
    # best (the start) and returns it
    fun, t = _quadratic()
    calls = []

    def wrong_gradient(x):
        cost, grad = fun(x)
        calls.append(cost)
        return cost, -grad

    x0 = np.zeros(50)
    ref_calls = []
    minimize(
        lambda x: (ref_calls.append(0), wrong_gradient(x))[1],
        x0,
        jac=True,
        method="L-BFGS-B",
        options=OPTIONS,
    )
    calls.clear()
    x, cost, nit = minimize_lbfgsb(
        wrong_gradient, x0, options=OPTIONS, callback=stop_when_slow(0.0)
    )
    assert len(calls) == 1 + STALL_EVALUATIONS < len(ref_calls)
    assert np.array_equal(x, x0) and cost == calls[0] == min(calls) and nit == 0
