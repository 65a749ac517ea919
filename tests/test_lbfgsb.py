"""ctreg.lbfgsb: the L-BFGS-B driver gives scipy.optimize.minimize's result bit for bit (the
same iterates, evaluations and stops), and minimize runs when the driver cannot be trusted."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import Bounds, minimize

from ctreg import lbfgsb
from ctreg.ffd import minimize_lbfgsb, stop_when_slow

OPTIONS = {"maxiter": 40, "maxfun": 90, "maxls": 8, "maxcor": 8, "ftol": 1e-12, "gtol": 1e-12}


def _problem(n=60, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 4.0, n)
    t = rng.normal(0.0, 2.0, n)
    evaluated = []

    def fun(x):
        evaluated.append(x.copy())
        r = x - t
        value = float(0.5 * np.sum(a * r * r) + 0.05 * np.sum(r**4) + np.sum(r[1:] * r[:-1]))
        grad = a * r + 0.2 * r**3
        grad[1:] += r[:-1]
        grad[:-1] += r[1:]
        return value, grad

    return fun, evaluated


def _both(bounds, options=OPTIONS, callback_factory=None, x0=None, n=60):
    fa, ea = _problem(n)
    fb, eb = _problem(n)
    x0 = np.zeros(n) if x0 is None else x0
    cb_a = None if callback_factory is None else callback_factory()
    cb_b = None if callback_factory is None else callback_factory()
    ref = minimize(
        fa, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options, callback=cb_a
    )
    assert lbfgsb.driver_ok()
    x, f, nit = lbfgsb._run_driver(
        fb,
        x0,
        None if bounds is None else bounds.lb,
        None if bounds is None else bounds.ub,
        callback=cb_b,
        **options,
    )
    return ref, (x, f, nit), ea, eb


@pytest.mark.parametrize(
    "bounds",
    [
        None,
        Bounds(np.full(60, -1.0), np.full(60, 1.0)),  # active on many variables
        Bounds(
            np.r_[np.full(30, -np.inf), np.full(30, -0.5)],
            np.r_[np.full(30, 0.7), np.full(30, np.inf)],
        ),
    ],
    ids=["none", "box", "one-sided"],
)
def test_driver_equals_minimize(bounds):
    ref, (x, f, nit), ea, eb = _both(bounds)
    assert np.array_equal(x, ref.x) and float(f) == float(ref.fun) and nit == ref.nit
    assert len(ea) == len(eb) and all(np.array_equal(p, q) for p, q in zip(ea, eb))


def test_driver_stops_as_minimize_does():
    box = Bounds(np.full(60, -1.0), np.full(60, 1.0))
    for options in (dict(OPTIONS, maxiter=3), dict(OPTIONS, maxfun=5)):  # maxiter, maxfun
        ref, (x, f, nit), ea, eb = _both(box, options)
        assert np.array_equal(x, ref.x) and nit == ref.nit and len(ea) == len(eb)

    def stop_after_two():  # a callback that raises StopIteration on the 2nd iterate
        seen = []

        def cb(intermediate_result):
            seen.append(float(intermediate_result.fun))
            if len(seen) == 2:
                raise StopIteration

        return cb

    ref, (x, f, nit), ea, eb = _both(box, callback_factory=stop_after_two)
    assert nit == ref.nit == 2 and np.array_equal(x, ref.x) and len(ea) == len(eb)
    # a start outside the bounds is clipped first, as minimize does
    ref, (x, f, nit), ea, eb = _both(box, x0=np.linspace(-3, 3, 60))
    assert np.array_equal(x, ref.x) and np.array_equal(ea[0], eb[0])


def test_minimize_lbfgsb_uses_the_driver_and_falls_back(monkeypatch):
    box = Bounds(np.full(60, -1.0), np.full(60, 1.0))
    calls = []
    real = lbfgsb._run_driver
    monkeypatch.setattr(lbfgsb, "_run_driver", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = []
    for ok in (True, False):  # False: a SciPy the driver does not match, minimize runs
        monkeypatch.setitem(lbfgsb._state, "ok", ok)
        calls.clear()
        fun, evaluated = _problem()
        x, cost, nit = minimize_lbfgsb(
            fun, np.zeros(60), options=OPTIONS, callback=stop_when_slow(1e-9), bounds=box
        )
        assert bool(calls) == ok
        runs.append((x, cost, nit, evaluated))
    (xa, ca, na, ea), (xb, cb, nb, eb) = runs
    assert np.array_equal(xa, xb) and ca == cb and na == nb and len(ea) == len(eb)


def test_driver_ok_is_false_when_setulb_misbehaves(monkeypatch):
    import scipy.optimize._lbfgsb as private

    monkeypatch.setattr(lbfgsb, "_state", {})

    def broken(*args):
        raise TypeError("another signature")

    monkeypatch.setattr(private, "setulb", broken)
    assert lbfgsb.driver_ok() is False


def test_register_is_the_same_with_the_driver_and_with_minimize(monkeypatch):
    import ctreg
    from ctreg import samples
    from ctreg.synthetic import BreathingMotion, make_breathing_pair

    pair = make_breathing_pair(samples.ct64_volume(), BreathingMotion(seed=4), n_landmarks=10)
    results = []
    for ok in (True, False):
        monkeypatch.setitem(lbfgsb._state, "ok", ok)
        results.append(ctreg.register(pair.reference, pair.floating))
    a, b = results
    assert np.array_equal(a.displacement, b.displacement)
    assert np.array_equal(a.warped.array, b.warped.array)
    assert [lv["iterations"] for lv in a.report["levels"]] == [
        lv["iterations"] for lv in b.report["levels"]
    ]
