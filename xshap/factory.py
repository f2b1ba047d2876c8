"""MODEL as ``package.module:factory``: the user's own code, imported and called, whatever it does reported.

A factory is code, and runs with the user's rights (see README, "Security"). What this module guarantees is
only that every way the import or the call can fail, ``SystemExit``, ``KeyboardInterrupt`` and other
``BaseException``s included, becomes an ``InputError`` naming the factory (``xshap check`` exits 2 with it),
never a silent exit or a crash reported as xshap's own bug.
"""

from __future__ import annotations

import importlib
import re
import sys

from xshap.errors import InputError

SPEC = re.compile(
    r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attribute>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)$", re.ASCII
)


class FactoryError(InputError):
    """Importing or calling a MODEL factory raised (anything, SystemExit and KeyboardInterrupt included)."""


def describe(error: BaseException) -> str:
    """``SystemExit(0)``, ``RuntimeError: no weights`` ...: what was raised, with a word for process exits."""
    if isinstance(error, SystemExit):
        return f"SystemExit({error.code!r}): it tried to end the process"
    text = str(error).strip()
    name = type(error).__name__
    described = f"{name}: {text}" if text else name
    if not isinstance(error, Exception):
        described += " (a BaseException: it would have stopped the process)"
    return described


def is_factory_spec(spec: str) -> bool:
    return SPEC.match(spec) is not None


def model_from_factory(spec: str):
    """The ``torch.nn.Module`` that ``package.module:factory`` returns (or the module the name refers to)."""
    match = SPEC.match(spec)
    if not match:
        raise InputError(
            f"MODEL {spec!r} is neither a .pt2 file nor package.module:factory (dotted Python names, one colon)"
        )
    module_name, attribute = match["module"], match["attribute"]
    if "" not in sys.path:
        sys.path.insert(0, "")  # the current directory, as `python -m` would have it
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"cannot import {spec!r}: {describe(error)}") from error
    except BaseException as error:  # the module's own code ran and failed: the user's to fix
        raise FactoryError(f"importing the module of MODEL {spec!r} raised {describe(error)}") from error
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError as error:
        raise InputError(f"cannot import {spec!r}: {describe(error)}") from error
    except BaseException as error:  # a module __getattr__ of the user's
        raise FactoryError(f"looking up MODEL {spec!r} raised {describe(error)}") from error
    import torch

    if isinstance(target, torch.nn.Module):
        return target
    if not callable(target):
        raise InputError(f"MODEL {spec!r} is a {type(target).__name__}, not a callable that returns a torch.nn.Module")
    try:
        model = target()
    except BaseException as error:  # whatever the user's factory raises is a problem of the input
        raise FactoryError(f"MODEL factory {spec!r} raised {describe(error)}") from error
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"MODEL factory {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
