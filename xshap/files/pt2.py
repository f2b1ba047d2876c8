"""A ``.pt2`` program from someone else: the layout ``torch.export.save`` writes, nothing more, checked
before torch sees a byte of it.

What torch 2.13's loader does with an archive, and why each entry kind is allowed or refused:

- ``archive_format`` ("pt2"), ``archive_version`` ("0"), ``byteorder`` ("little"), ``.data/version``,
  ``.data/serialization_id``: small records, content checked;
- ``models/model.json``: the one program, its graph checked by ``graph`` (torch loads every entry under
  ``models/`` as a program, so a second one is refused);
- ``data/weights/model_weights_config.json``, ``data/constants/model_constants_config.json`` and the raw records
  ``weight_N``, ``tensor_N`` they list: checked by ``payloads`` (pickled payloads refused, sizes capped);
- ``data/sample_inputs/model.pt``: torch loads it with ``weights_only=True`` and, if that fails, again with
  ``weights_only=False``. It must be a ``torch.save`` archive loadable with ``weights_only=True``, and torch
  is given an empty record in its place (xshap takes its examples from the background), so torch unpickles
  nothing from the file;
- ``extra/...``: ``torch.export.save``'s extra files, UTF-8 text;
- everything else is refused: AOTInductor payloads (``data/aotinductor/``: torch extracts and ``dlopen``s
  the shared libraries), ExecuTorch and MTIA payloads, legacy pickled weights, unknown entries.

torch then loads an archive rebuilt in memory from the checked entries (``rebuild``), through the archive
loader itself rather than ``torch.export.load``, whose fallback re-reads a failed archive with its legacy
reader.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings

from xshap.errors import InputError
from xshap.files.errors import UnsafeFileError
from xshap.files.graph import graph_problems
from xshap.files.limits import Limits
from xshap.files.opening import open_regular
from xshap.files.payloads import CONSTANTS, WEIGHTS, PayloadKind, payload_problems
from xshap.files.pt import first_line, load_torch_save
from xshap.files.rebuild import torch_archive
from xshap.files.zipread import ZipArchive, by_relative_name

PROGRAM = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
EXTRA = "extra/"
SMALL_RECORDS = {
    "archive_format": re.compile(rb"^pt2$"),
    "archive_version": re.compile(rb"^0$"),
    "byteorder": re.compile(rb"^little$"),
    ".data/version": re.compile(rb"^\d{1,4}\n?$"),
    ".data/serialization_id": re.compile(rb"^[0-9A-Za-z]{1,64}$"),
}
REQUIRED = ("archive_format", "archive_version", PROGRAM, SAMPLE_INPUTS, WEIGHTS.config, CONSTANTS.config)
# why an entry outside the allow-list is refused, by prefix (first match)
REFUSED_PREFIXES = (
    ("data/aotinductor/", "AOTInductor compiled code, which torch would extract and load as a shared library"),
    ("models/", "a second program (torch loads every entry under models/)"),
    ("data/executorch/", "an ExecuTorch payload"),
    ("data/mtia", "an MTIA payload"),
    ("xl_model_weights/", "external weights"),
    ("data/constants/custom_obj_", "a pickled custom object"),
    ("data/constants/opaque_obj_", "a pickled opaque object"),
    ("data/weights/model.pt", "legacy pickled weights (an older torch wrote them: save the program again)"),
    ("data/constants/model.pt", "legacy pickled constants (an older torch wrote them: save the program again)"),
    ("data/sample_inputs/", "sample inputs of another program"),
)


def _kind_of(name: str) -> str | None:
    """The allow-listed kind of an entry (inside the root folder), or None."""
    if name in SMALL_RECORDS:
        return "small"
    if name in (PROGRAM, WEIGHTS.config, CONSTANTS.config):
        return "json"
    if name == SAMPLE_INPUTS:
        return "sample inputs"
    for kind in (WEIGHTS, CONSTANTS):
        if name.startswith(kind.folder) and kind.record.match(name[len(kind.folder) :]):
            return "record"
    if name.startswith(EXTRA) and len(name) > len(EXTRA):
        return "extra"
    return None


def _refusal(name: str) -> str:
    for prefix, why in REFUSED_PREFIXES:
        if name.startswith(prefix):
            return f"{name}: {why}"
    return f"{name}: not part of an archive torch.export.save writes"


def _refuse(what: str, problems: list[str], headline: str) -> UnsafeFileError:
    shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
    return UnsafeFileError(f"refusing to load {what}: {headline}:\n  " + "\n  ".join(shown))


def _json(archive: ZipArchive, full: str, name: str) -> object:
    text = archive.read(full, archive.limits.max_text_bytes)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise UnsafeFileError(f"refusing {archive.what}: {name} is not valid JSON ({first_line(error)})") from None


def checked_records(archive: ZipArchive) -> list[tuple[str, bytes]]:
    """The entries of a ``torch.export.save`` archive, every one checked, named inside its root folder."""
    names = by_relative_name(archive)
    what = archive.what
    unknown = [_refusal(name) for name in names if _kind_of(name) is None]
    if unknown:
        raise _refuse(what, unknown, "entries outside the layout torch.export.save writes")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise UnsafeFileError(f"refusing {what}: not a torch.export.save archive (no {', '.join(missing)})")
    read: dict[str, bytes] = {}
    for name, pattern in SMALL_RECORDS.items():
        if name in names:
            read[name] = archive.read(names[name], max_size=64)
            if not pattern.match(read[name]):
                raise UnsafeFileError(f"refusing {what}: its {name} record holds {read[name][:40]!r}")
    problems = _payload_problems(archive, names, read)
    program = _json(archive, names[PROGRAM], PROGRAM)
    problems += graph_problems(program, archive.limits)
    if problems:
        raise _refuse(what, problems, "torch would run, unpickle or allocate what it holds")
    read[PROGRAM] = json.dumps(program).encode()  # torch parses exactly the document that was checked
    _check_sample_inputs(archive, names[SAMPLE_INPUTS])
    read[SAMPLE_INPUTS] = b""  # torch need not unpickle anything: xshap's examples are the background's rows
    for name, full in names.items():
        kind = _kind_of(name)
        if kind == "record":
            read[name] = archive.read(full)
        elif kind == "extra":
            read[name] = archive.read(full, archive.limits.max_text_bytes)
            try:
                read[name].decode("utf-8")
            except UnicodeDecodeError:
                raise UnsafeFileError(f"refusing {what}: the extra file {name} is not UTF-8 text") from None
    return [(name, read[name]) for name in names if name in read]


def _payload_problems(archive: ZipArchive, names: dict[str, str], read: dict[str, bytes]) -> list[str]:
    problems: list[str] = []
    allocated = 0
    for kind in (WEIGHTS, CONSTANTS):
        config = _json(archive, names[kind.config], kind.config)
        read[kind.config] = json.dumps(config).encode()  # re-serialized: what torch parses is what was checked
        problems_here, _used, size = payload_problems(config, kind, _record_sizes(archive, names, kind))
        problems += problems_here
        allocated += size
    if allocated > archive.limits.max_bytes:
        problems.append(f"its weights take {allocated:,} bytes, over the limit of {archive.limits.max_bytes:,}")
    return problems


def _record_sizes(archive: ZipArchive, names: dict[str, str], kind: PayloadKind) -> dict[str, int]:
    folder = kind.folder
    return {
        name[len(folder) :]: archive.entry(full).size
        for name, full in names.items()
        if name.startswith(folder) and _kind_of(name) == "record"
    }


def _check_sample_inputs(archive: ZipArchive, full: str) -> None:
    data = archive.read(full)
    value = load_torch_save(io.BytesIO(data), f"{archive.what} ({SAMPLE_INPUTS})", archive.limits)
    if not isinstance(value, (tuple, dict)):
        raise UnsafeFileError(f"refusing {archive.what}: {SAMPLE_INPUTS} holds a {type(value).__name__}")


def load_program(path: str | os.PathLike, limits: Limits | None = None):
    """A ``torch.export.ExportedProgram`` from a ``.pt2`` file, loaded from its checked entries only."""
    limits = limits or Limits()
    what = str(path)
    with open_regular(path, "model file") as source:
        archive = ZipArchive.parse(source, what, limits)
        records = checked_records(archive)
    return _load_checked(torch_archive(records, min_version=6), what)


def _load_checked(data: bytes, what: str):
    from torch.export.pt2_archive._package import load_pt2

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            contents = load_pt2(io.BytesIO(data))
    except Exception as error:  # torch raises many types for an archive it cannot deserialize
        message = f"torch could not load the program in {what}: {type(error).__name__}: {first_line(error)}"
        raise InputError(message) from error
    if set(contents.exported_programs) != {"model"} or contents.aoti_runners:
        raise UnsafeFileError(f"refusing {what}: torch found other programs in it")
    return contents.exported_programs["model"]
