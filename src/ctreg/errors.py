"""Exception hierarchy. Every message names the file, tag or argument and what is accepted.

Every class has a stable machine-readable ``code`` class attribute (``Family.Reason``, the
service's style; listed in docs/errors.md).  Programs branch on ``exc.code`` or on the class,
never on the message text, which may be reworded.  A few classes let an instance refine its
code to one of ``codes`` (e.g. a DICOM rule error says which rule was broken).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CTRegError", "DicomSeriesError", "GeometryError", "OptionError", "ResultFolderError"]


class CTRegError(Exception):
    """Base class of every error ctreg raises on purpose."""

    #: stable machine-readable reason (see docs/errors.md)
    code: str = "CTReg.Error"
    #: the codes an instance of this class may carry (the class's own code first)
    codes: tuple[str, ...] = ("CTReg.Error",)

    def __init__(self, *args: object, code: str | None = None):
        super().__init__(*args)
        if code is not None:
            if code not in type(self).codes:
                raise ValueError(
                    f"{type(self).__name__}: code {code!r} is not one of {type(self).codes}"
                )
            self.code = code


class DicomSeriesError(CTRegError, ValueError):
    """A DICOM source breaks one of the service's input rules."""

    code = "InvalidFile.Series"
    codes: tuple[str, ...] = (
        "InvalidFile.Series",
        "InvalidFile.NotDicom",
        "InvalidFile.FrameCount",
        "InvalidFile.NotAxial",
        "InvalidFile.Download",
        "InvalidFile.URL",
        "InvalidFile.TooLarge",
    )


class GeometryError(CTRegError, ValueError):
    """Inconsistent or unsupported geometry (affine, spacing, orientation, grid)."""

    code = "InvalidFile.Geometry"
    codes = ("InvalidFile.Geometry",)


class OptionError(CTRegError, ValueError, TypeError):
    """An unknown option name or an invalid option value (registration options, presets, CLI
    and service overrides).  Also a ``ValueError`` and a ``TypeError``, which the dataclasses
    raised before."""

    code = "InvalidParameter.Option"
    codes = ("InvalidParameter.Option",)


def unknown_names(what: str, given: Iterable[str], valid: Iterable[str]) -> OptionError | None:
    """An OptionError naming the names of ``given`` that are not in ``valid`` and listing the
    valid ones, or None when every name is valid."""
    valid = list(valid)
    bad = [g for g in given if g not in valid]
    if not bad:
        return None
    names = ", ".join(repr(b) for b in bad)
    return OptionError(f"unknown {what} {names}; valid: {', '.join(valid)}")


class ResultFolderError(CTRegError):
    """A saved result folder cannot be read back (``ctreg.load_result``).

    ``code`` names what is wrong (stable, for programs): ``InvalidResult.NotFound`` (no such
    folder), ``InvalidResult.MissingFile`` (a file the result needs is absent),
    ``InvalidResult.Damaged`` (a file is truncated or unreadable), ``InvalidResult.Mismatch``
    (files that disagree, e.g. a field on another grid) or ``InvalidResult.Version`` (written
    by a newer ctreg).  ``path`` is the file or folder concerned.
    """

    code = "InvalidResult.Damaged"
    codes = (
        "InvalidResult.Damaged",
        "InvalidResult.NotFound",
        "InvalidResult.MissingFile",
        "InvalidResult.Mismatch",
        "InvalidResult.Version",
    )

    def __init__(self, message: str, *, code: str, path=None):
        super().__init__(message, code=code)
        self.path = path
