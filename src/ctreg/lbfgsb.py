"""L-BFGS-B as ``scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B")`` runs it, without
its per-call Python loops over the variables.

``minimize`` turns a ``Bounds`` object into one ``(lo, hi)`` tuple per variable, back into
arrays, and classifies each variable's bounds in a Python loop: about 3 µs per variable and
call.  A B-spline level has up to ~10^5 coefficients, so on 512x512x300 these loops took about
1.4 s of one ``register()`` (cProfile), on one core while the other waited.  This driver calls
SciPy's own L-BFGS-B step (``scipy.optimize._lbfgsb.setulb``, the routine ``minimize`` calls)
with the same arguments, builds the bound arrays with NumPy, and evaluates the function in the
same order with the same arguments as ``minimize`` (the start first; a point asked for again
is not evaluated again), so the iterates, the evaluations and the result are the same, bit for
bit.

``setulb`` is private to SciPy and its signature has changed before (SciPy 1.15 replaced the
Fortran code).  So the driver is used only once it has given the same result as ``minimize``
on a small bounded problem in this process (:func:`driver_ok`); otherwise ``minimize`` runs.
tests/test_lbfgsb.py compares the two on bounded and unbounded problems, on the stops by
callback, ``maxiter`` and ``maxfun``, and on a B-spline level.
"""

from __future__ import annotations

import numpy as np

__all__ = ["minimize_lbfgsb_scipy", "driver_ok"]

_state: dict = {}


def _run_driver(
    fun,
    x0,
    lb,
    ub,
    *,
    maxcor=10,
    ftol=2.2204460492503131e-09,
    gtol=1e-5,
    maxfun=15000,
    maxiter=15000,
    maxls=20,
    callback=None,
):
    """(x, f, nit) of L-BFGS-B from ``x0`` (see the module docstring); ``lb``/``ub``: (n,)
    float64 bounds (+-inf: none) or None."""
    from scipy.optimize import OptimizeResult, _lbfgsb

    x0 = np.asarray(x0).ravel()
    if x0.dtype.kind in "iub":
        x0 = x0.astype(float)
    n = x0.shape[0]
    nbd = np.zeros(n, np.int32)
    low_bnd = np.zeros(n, np.float64)
    upper_bnd = np.zeros(n, np.float64)
    if lb is not None:
        lb = np.broadcast_to(np.asarray(lb, np.float64), (n,))
        ub = np.broadcast_to(np.asarray(ub, np.float64), (n,))
        if (lb > ub).any():
            raise ValueError("LBFGSB - one of the lower bounds is greater than an upper bound.")
        x0 = np.clip(x0, lb, ub)
        has_lo, has_hi = ~np.isinf(lb), ~np.isinf(ub)
        low_bnd[has_lo] = lb[has_lo]
        upper_bnd[has_hi] = ub[has_hi]
        # minimize's codes: 0 none, 1 lower only, 2 both, 3 upper only
        nbd[has_lo & ~has_hi] = 1
        nbd[has_lo & has_hi] = 2
        nbd[~has_lo & has_hi] = 3
    evals = [0]
    cur = [x0.astype(np.float64), None, None]  # the evaluated point, its f and g

    def evaluate(x):
        value, grad = fun(np.copy(x))
        evals[0] += 1
        if not np.isscalar(value):
            value = np.asarray(value).item()
        return value, np.atleast_1d(grad)

    cur[1], cur[2] = evaluate(cur[0])  # minimize evaluates the start when it sets up
    m = int(maxcor)
    x = np.array(x0, dtype=np.float64)
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros((n,), dtype=np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task = np.zeros(2, dtype=np.int32)
    ln_task = np.zeros(2, dtype=np.int32)
    lsave = np.zeros(4, dtype=np.int32)
    isave = np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29, dtype=np.float64)
    factr = ftol / np.finfo(float).eps
    nit = 0
    while True:
        g = g.astype(np.float64)
        _lbfgsb.setulb(
            m,
            x,
            low_bnd,
            upper_bnd,
            nbd,
            f,
            g,
            factr,
            gtol,
            wa,
            iwa,
            task,
            lsave,
            isave,
            dsave,
            maxls,
            ln_task,
        )
        if task[0] == 3:  # f and g at x
            if not np.array_equal(x, cur[0]):
                cur[0] = x.astype(np.float64)
                cur[1], cur[2] = evaluate(cur[0])
            f, g = cur[1], cur[2]
        elif task[0] == 1:  # a new iterate
            nit += 1
            if callback is not None:
                try:
                    callback(OptimizeResult(x=x, fun=f))
                except StopIteration:
                    task[0], task[1] = 5, 505
            if nit >= maxiter:
                task[0], task[1] = 5, 504
            elif evals[0] > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    return x, f, nit


def _minimize(fun, x0, bounds, options, callback):
    from scipy.optimize import minimize

    res = minimize(
        fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options, callback=callback
    )
    return res.x, res.fun, int(res.nit)


def driver_ok() -> bool:
    """Whether the driver gives ``minimize``'s result on a small bounded problem (once per
    process)."""
    if "ok" not in _state:
        from scipy.optimize import Bounds

        def fun(x):  # a bounded, coupled quadratic with a quartic term
            a = np.arange(1.0, x.size + 1.0)
            r = x - 0.3 * a
            value = float(np.sum(a * r * r) + 0.1 * np.sum(r**4) + np.sum(r[1:] * r[:-1]))
            grad = 2 * a * r + 0.4 * r**3
            grad[1:] += r[:-1]
            grad[:-1] += r[1:]
            return value, grad

        x0 = np.linspace(-1.0, 1.0, 9)
        lo, hi = np.full(9, -0.5), np.full(9, 1.2)
        opts = {"maxiter": 30, "maxfun": 70, "maxcor": 5, "maxls": 8, "ftol": 1e-12, "gtol": 1e-10}
        try:
            a = _run_driver(fun, x0, lo, hi, **opts)
            b = _minimize(fun, x0, Bounds(lo, hi), opts, None)
            _state["ok"] = bool(
                np.array_equal(a[0], b[0]) and float(a[1]) == float(b[1]) and a[2] == b[2]
            )
        except Exception:  # noqa: BLE001 - another SciPy: minimize it is
            _state["ok"] = False
    return _state["ok"]


def minimize_lbfgsb_scipy(fun, x0, *, bounds=None, options: dict, callback=None):
    """``(x, f, nit)`` of ``scipy.optimize.minimize(fun, x0, jac=True, method="L-BFGS-B",
    bounds=bounds, options=options, callback=callback)``, computed by the driver when
    :func:`driver_ok`.  ``bounds``: None or a ``scipy.optimize.Bounds`` (a sequence of pairs
    goes to ``minimize``); ``callback`` takes the intermediate result and may raise
    StopIteration."""
    from scipy.optimize import Bounds

    plain = bounds is None or isinstance(bounds, Bounds)
    if not plain or np.asarray(x0).dtype != np.float64 or not driver_ok():
        return _minimize(fun, x0, bounds, options, callback)  # (lo, hi) pairs: minimize's own
    lb = ub = None
    if bounds is not None:
        lb, ub = bounds.lb, bounds.ub
    return _run_driver(fun, x0, lb, ub, callback=callback, **options)
