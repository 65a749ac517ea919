"""Every CTRegError class carries a stable, documented code; codes never come from messages."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import ctreg
import ctreg.client
import ctreg.io
import ctreg.service
from ctreg import options_for
from ctreg.errors import CTRegError, OptionError
from ctreg.options import AffineOptions, DemonsOptions, FFDOptions, RegistrationOptions

ROOT = Path(__file__).resolve().parents[1]
CODE = re.compile(r"^[A-Z][A-Za-z]*(\.[A-Z][A-Za-z]*)*$")


def _import_every_module():
    """Error classes live next to the code that raises them: import every ctreg module so that
    the list below holds them all, not only those imported so far."""
    import importlib
    import pkgutil

    for mod in pkgutil.walk_packages(ctreg.__path__, "ctreg."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)


_import_every_module()


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


PUBLIC = sorted(
    {
        c
        for c in _subclasses(CTRegError)
        if not c.__name__.startswith("_") and c.__module__.startswith("ctreg")
    }
    | {CTRegError},
    key=lambda c: c.__name__,
)


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_every_error_class_has_a_documented_code(cls):
    assert "code" in vars(cls), f"{cls.__name__} must set its own code class attribute"
    assert CODE.match(cls.code), cls.code
    doc = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert f"`{cls.__name__}`" in doc or f".{cls.__name__}`" in doc, cls.__name__
    assert f"`{cls.code}`" in doc
    if cls.__name__ == "ServiceError":
        return  # its instances carry whatever code the service answered
    assert "codes" in vars(cls), f"{cls.__name__} must list the codes its instances may carry"
    assert cls.code == cls.codes[0], "the class's own code comes first in codes"
    for code in cls.codes:
        assert CODE.match(code), code
        assert f"`{code}`" in doc, f"{cls.__name__}: {code} is not in docs/errors.md"


def test_the_list_holds_the_error_classes_of_modules_nobody_imported_yet():
    names = {c.__name__ for c in PUBLIC}
    assert {"LungMaskError", "MindArgumentError", "EvaluationError", "SyntheticLungError"} <= names


def test_instance_codes_are_checked():
    from ctreg.io import DicomRuleError

    assert DicomRuleError("x").code == "InvalidFile.Series"
    assert DicomRuleError("x", code="InvalidFile.NotAxial").code == "InvalidFile.NotAxial"
    with pytest.raises(ValueError, match="is not one of"):
        DicomRuleError("x", code="InvalidFile.Typo")


def test_no_message_matching_for_codes():
    """The service and the CLI take codes from ``exc.code``; no regex over messages."""
    for rel in ("src/ctreg/service/codes.py", "src/ctreg/service/worker.py", "src/ctreg/cli.py"):
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert not re.search(r"\bre\.(search|match|compile|fullmatch)\(", text), rel


@pytest.mark.parametrize(
    "make, valid",
    [
        (lambda: AffineOptions(levels=(4.0,)), "levels_mm"),
        (lambda: FFDOptions(metrc="ncc"), "metric"),
        (lambda: DemonsOptions(iters=(3,)), "iterations"),
        (lambda: RegistrationOptions(afine={}), "affine"),
        (lambda: RegistrationOptions(ffd={"bending": 1.0}), "bending_weight"),
        (lambda: options_for("fast", demon={"enabled": False}), "demons"),
        (lambda: options_for("fast", ffd={"metrc": "ncc"}), "metric"),
        (lambda: options_for("fastest"), "accurate"),
        (lambda: dataclasses.replace(AffineOptions(), bogus=1), "rotation_search_deg"),
    ],
)
def test_unknown_option_names_list_the_valid_ones(make, valid):
    with pytest.raises(OptionError, match="unknown") as err:
        make()
    assert valid in str(err.value)
    assert err.value.code == "InvalidParameter.Option"
    assert isinstance(err.value, TypeError) and isinstance(err.value, ValueError)


def test_unknown_service_option_and_register_override():
    with pytest.raises(OptionError, match="valid: .*data_dir"):
        ctreg.service.ServiceOptions(data_dir="/tmp/x", prot=1)
    vol = ctreg.Volume(__import__("numpy").zeros((8, 8, 8), "float32"), __import__("numpy").eye(4))
    with pytest.raises(OptionError, match="unknown registration option.*'afine'"):
        ctreg.register(vol, vol, afine={"enabled": False})
