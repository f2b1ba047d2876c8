"""Files from a stranger (issue 15), checked in this process: the ZIP reader, the .pt2/.pt allow-lists, the
.npy header checks and the caps on sizes. Each attack is built here; where it is safe, the same file is shown
to run its payload under torch's own loader, so the refusal is of a real attack. tests/test_untrusted_cli.py
runs a handful of them through ``xshap check`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import zipfile
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import attacks
from tests.zipcraft import Crafted, Layout, build_zip, entries_of
from xshap.files import FileTooLargeError, Limits, UnsafeFileError, load_array, load_program
from xshap.files.dtypes import SCALAR_TYPES
from xshap.files.pt2 import REQUIRED, checked_records
from xshap.files.symexpr import expression_problem
from xshap.files.zipread import ZipArchive

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def clean():
    """Clean archives as torch.export.save writes them: one row, dynamic batch (with extra files)."""
    return {"one": attacks.clean_program(), "dynamic": attacks.clean_program(dynamic=True, extra_files={"a.txt": "b"})}


def parse(data: bytes, limits: Limits | None = None) -> dict[str, bytes]:
    """What xshap's reader says the archive holds (every entry read)."""
    archive = ZipArchive.parse(io.BytesIO(data), "test.zip", limits or Limits())
    return {name: archive.read(name) for name in archive.names()}


def zipfile_view(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def torch_view(data: bytes) -> dict[str, bytes]:
    """What torch's own reader (miniz) sees: names inside the root folder."""
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    return {name: bytes(reader.get_record(name)) for name in reader.get_all_records()}


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- the ZIP reader -----------------------------------------------------------------------------------------

names = st.lists(
    st.text(alphabet="abcdefgh_.-0123456789", min_size=1, max_size=12).filter(lambda p: p not in (".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)
contents = st.binary(max_size=300) | st.sampled_from([b"", b"\0" * 5000, b"pt2", bytes(range(256)) * 3])


@st.composite
def valid_layouts(draw):
    chosen = draw(st.lists(names, min_size=1, max_size=6, unique_by=str.casefold))
    crafted = [Crafted("root/.data/version", b"6\n")] + [
        Crafted(f"root/{name}", draw(contents), method=draw(st.sampled_from([0, 8])), descriptor=draw(st.booleans()))
        for name in chosen
    ]
    return Layout(entries=crafted, zip64=draw(st.booleans()))


@FAST
@given(valid_layouts())
def test_reader_accepts_valid_archives_and_agrees_with_zipfile_and_torch(layout):
    """Stored or deflated, with data descriptors or without, ZIP64 or not: the three readers agree."""
    data = build_zip(layout)
    mine = parse(data)
    assert mine == zipfile_view(data)
    assert {name.split("/", 1)[1]: value for name, value in mine.items()} == torch_view(data)


def test_reader_reads_what_torch_and_zipfile_write(clean):
    for data in (*clean.values(), _zipfile_written()):
        assert parse(data) == zipfile_view(data)


def _zipfile_written() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("r/a.txt", b"hello" * 100)
        with archive.open("r/big", "w", force_zip64=True) as entry:
            entry.write(b"x" * 5000)
    return buffer.getvalue()


def _swap_names(entries):
    if len(entries) > 1:
        entries[0].local_name = entries[1].name
    else:
        entries[0].local_name = entries[0].name + "x"


# each trick makes the archive ambiguous, unsafe or inconsistent; every one must be refused
TRICKS = {
    "prepended bytes": lambda layout: setattr(layout, "prefix", b"MZ" + b"\0" * 30),
    "appended bytes": lambda layout: setattr(layout, "suffix", b"\0" * 7),
    "archive comment": lambda layout: setattr(layout, "comment", b"PK\x05\x06" + b"\0" * 18),
    "second end record": lambda layout: setattr(layout, "extra_end", True),
    "entry count lies": lambda layout: setattr(layout, "count_delta", 1),
    "local name differs": lambda layout: _swap_names(layout.entries),
    "duplicate name": lambda layout: layout.entries.append(Crafted(layout.entries[0].name, b"other")),
    "duplicate ignoring case": lambda layout: layout.entries.append(Crafted(layout.entries[0].name.upper(), b"x")),
    "parent directory": lambda layout: setattr(layout.entries[0], "name", "root/a/../../escape"),
    "absolute name": lambda layout: setattr(layout.entries[0], "name", "/etc/cron.d/x"),
    "backslash": lambda layout: setattr(layout.entries[0], "name", "root\\..\\x"),
    "NUL in name": lambda layout: setattr(layout.entries[0], "name", "root/a\x00.so"),
    "drive letter": lambda layout: setattr(layout.entries[0], "name", "C:/x"),
    "directory entry": lambda layout: setattr(layout.entries[0], "name", layout.entries[0].name + "/"),
    "non-ASCII name": lambda layout: setattr(layout.entries[0], "name", "root/\u00e9t\u00e9"),
    "odd compression method": lambda layout: setattr(layout.entries[0], "method", 12),
    "encrypted": lambda layout: setattr(layout.entries[0], "flags", 0x0001),
    "unknown flag": lambda layout: setattr(layout.entries[0], "flags", 0x0020),
    "size lies": lambda layout: setattr(layout.entries[0], "declared_size", 1 << 20),
    "CRC lies": lambda layout: setattr(layout.entries[0], "crc", 12345),
    "unlisted entry": lambda layout: layout.entries.insert(0, Crafted("root/hidden.so", b"\x7fELF", listed=False)),
    "misplaced local header": lambda layout: setattr(layout.entries[-1], "offset_shift", 1),
    "version beyond 4.5": lambda layout: setattr(layout.entries[0], "version", 63),
    "unicode path field": lambda layout: setattr(layout.entries[0], "central_extra", b"up\x05\x00\x01abcd"),
    "unknown extra field": lambda layout: setattr(layout.entries[0], "local_extra", b"\x99\x99\x00\x00"),
    "truncated extra field": lambda layout: setattr(layout.entries[0], "local_extra", b"FB\x09\x00abc"),
    "entry comment": lambda layout: setattr(layout.entries[0], "comment", b"hi"),
    "symlink": lambda layout: setattr(layout.entries[0], "external_attr", 0o120777 << 16),
    "several top folders": lambda layout: layout.entries.append(Crafted("other/x", b"x")),
}


@FAST
@given(valid_layouts(), st.sampled_from(sorted(TRICKS)))
def test_every_structural_trick_is_refused(layout, trick):
    TRICKS[trick](layout)
    if trick == "size lies" and layout.entries[0].method == 8:  # deflate: the stream ends before the claim
        layout.entries[0].declared_size = len(layout.entries[0].data) + 1
    data = build_zip(layout)
    with pytest.raises(UnsafeFileError):
        archive = ZipArchive.parse(io.BytesIO(data), "test.zip", Limits())
        for name in archive.names():
            archive.read(name)
        if trick == "several top folders":
            from xshap.files.zipread import by_relative_name

            by_relative_name(archive)


def test_two_zip64_end_records_are_two_archives_and_refused(clean, tmp_path):
    marker = tmp_path / "ran"
    data = attacks.ambiguous_zip64(clean["one"], marker)
    seen_by_zipfile, seen_by_torch = zipfile_view(data), torch_view(data)  # really two archives in one file
    assert "serialized_state_dict.pt" in seen_by_zipfile and "models/model.json" in seen_by_torch
    assert not any(name.endswith("models/model.json") for name in seen_by_zipfile)
    with pytest.raises(UnsafeFileError, match="ZIP64 locator points elsewhere"):
        parse(data)
    assert not marker.exists()


@st.composite
def mutations(draw):
    """A valid torch archive with a few bytes overwritten, inserted or cut (anywhere, headers included)."""
    data = bytearray(build_zip(Layout(entries=entries_of(CLEAN_PT), zip64=draw(st.booleans()))))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "insert", "cut", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


def _torch_saved(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


CLEAN_PT = _torch_saved([torch.arange(6.0), torch.ones(2, 2)])


@settings(max_examples=150, deadline=None)
@given(mutations())
def test_mutated_archives_are_refused_cleanly_or_read_as_every_reader_reads_them(data):
    """Whatever bytes change, the reader refuses with UnsafeFileError or reads exactly what zipfile and torch's
    own reader read."""
    try:
        mine = parse(data)
    except UnsafeFileError:
        return
    assert mine == zipfile_view(data)
    assert {name.split("/", 1)[1]: value for name, value in mine.items()} == torch_view(data)


def test_sizes_are_checked_from_the_headers_before_inflating():
    bomb = build_zip(Layout(entries=[attacks.deflate_bomb("r/zeros", 1 << 30)]))
    start = time.perf_counter()
    with pytest.raises(FileTooLargeError, match="decompression bomb"):
        ZipArchive.parse(io.BytesIO(bomb), "bomb.zip", Limits(max_bytes=2 << 30))
    with pytest.raises(FileTooLargeError, match="over the limit"):
        ZipArchive.parse(io.BytesIO(bomb), "bomb.zip", Limits(max_bytes=1 << 29))
    assert time.perf_counter() - start < 1.0, "refused only after inflating"


def test_sizes_are_enforced_while_inflating():
    """Headers that understate the size (yet plausibly, for the compressed size): inflating stops one byte past
    what they claim."""
    stream = attacks.zeros_deflated(256 << 20)
    claimed = 2 * len(stream)
    crafted = Crafted("r/zeros", b"", method=8, declared_size=claimed, crc=attacks.zeros_crc(claimed), stream=stream)
    archive = ZipArchive.parse(io.BytesIO(build_zip(Layout(entries=[crafted]))), "lying.zip", Limits())
    start = time.perf_counter()
    with pytest.raises(UnsafeFileError, match=f"inflates to more than its declared {claimed:,} bytes"):
        archive.read("r/zeros")
    assert time.perf_counter() - start < 0.5


def test_an_entry_hidden_inside_another_is_refused():
    """The directory lists a second entry whose local header sits inside the first one's data."""
    inner = build_zip(Layout(entries=[Crafted("r/hidden.so", b"\x7fELF")]))
    first = Crafted("r/a", b"head" + inner[: inner.index(b"PK\x01\x02")])
    embedded_at = 30 + len(first.name) + 4
    usual_at = 30 + len(first.name) + len(first.data)
    layout = Layout(entries=[first, Crafted("r/hidden.so", b"\x7fELF", offset_shift=embedded_at - usual_at)])
    data = build_zip(layout)
    assert zipfile_view(data)["r/hidden.so"] == b"\x7fELF"  # zipfile follows the directory into r/a's data
    with pytest.raises(UnsafeFileError, match="overlaps the next one"):
        parse(data)


def test_a_deflate_stream_must_end_with_the_entry():
    crafted = Crafted("r/a", b"hello", method=8)
    crafted.stream = zlib.compress(b"hello")[2:-4] + b"junk"
    with pytest.raises(UnsafeFileError, match="ends before its data does"):
        parse(build_zip(Layout(entries=[crafted])))


# -- the .pt2 allow-list ------------------------------------------------------------------------------------


def test_ordinary_exports_pass_the_allow_list(clean):
    for data in clean.values():
        archive = ZipArchive.parse(io.BytesIO(data), "m.pt2", Limits())
        names = [name for name, _ in checked_records(archive)]
        assert set(REQUIRED) <= set(names)
    assert ("extra/a.txt", b"b") in checked_records(ZipArchive.parse(io.BytesIO(clean["dynamic"]), "m", Limits()))


class _Sliced(torch.nn.Module):
    """Slices to the end (INT64_MAX in the graph), GELU, LayerNorm, softmax: common ops a dynamic export holds."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm = torch.nn.Linear(4, 6), torch.nn.LayerNorm(6)

    def forward(self, x):
        h = torch.nn.functional.gelu(self.norm(self.fc(x)), approximate="tanh")
        return torch.softmax(h[:, 1:], dim=-1) + x[:, -1:]


def test_a_dynamic_export_of_common_ops_passes(tmp_path):
    program = torch.export.export(_Sliced().eval(), (torch.randn(3, 4),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "m.pt2")
    assert load_program(tmp_path / "m.pt2") is not None


def test_torch_never_unpickles_the_sample_inputs(clean, tmp_path):
    program = load_program(write(tmp_path, "m.pt2", clean["one"]))
    assert program.example_inputs is None  # torch was given an empty record in their place
    archive = ZipArchive.parse(io.BytesIO(clean["one"]), "m", Limits())
    assert dict(checked_records(archive))["data/sample_inputs/model.pt"] == b""


@pytest.mark.parametrize(
    "name, reason",
    [
        ("data/aotinductor/model/model.so", "AOTInductor compiled code"),
        ("models/evil.json", "a second program"),
        ("models/evil", "a second program"),
        ("data/executorch/model.pte", "ExecuTorch"),
        ("data/constants/custom_obj_0", "pickled custom object"),
        ("data/constants/opaque_obj_0", "pickled opaque object"),
        ("data/weights/model.pt", "legacy pickled weights"),
        ("data/sample_inputs/other.pt", "sample inputs of another program"),
        ("xl_model_weights/model_param_config", "external weights"),
        ("serialized_state_dict.pt", "not part of an archive torch.export.save writes"),
        ("data/weights/weight_x", "not part of an archive torch.export.save writes"),
    ],
)
def test_every_entry_outside_the_layout_is_refused_by_name(clean, tmp_path, name, reason):
    marker = tmp_path / "ran"
    path = write(tmp_path, "m.pt2", attacks.modified(clean["one"], add={name: attacks.marker_pickle(marker)}))
    with pytest.raises(UnsafeFileError, match=reason):
        load_program(path)
    assert not marker.exists()


@pytest.mark.parametrize("attack", ["second_program", "pickled_weight"])
def test_pickled_weights_are_refused_though_torch_would_run_them(clean, tmp_path, attack):
    marker = tmp_path / "ran"
    path = write(tmp_path, "m.pt2", getattr(attacks, attack)(clean["one"], marker))
    with pytest.raises(UnsafeFileError):
        load_program(path)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # torch fails after the payload ran; how it fails does not matter
        torch.export.load(path)
    assert marker.exists(), "the attack is real: torch's own loader ran the payload"


def test_pickled_constants_and_objects_are_refused(clean, tmp_path):
    for path_name in ("tensor_0", "custom_obj_0", "opaque_obj_0"):

        def edit(name, document, path_name=path_name):
            if "constants" in name:
                meta = attacks.first_weight_meta(clean["one"])
                document["config"]["c"] = {
                    "path_name": path_name,
                    "is_param": False,
                    "use_pickle": True,
                    "tensor_meta": meta,
                }

        add = {"data/constants/tensor_0": b"\0" * 4} if path_name == "tensor_0" else {}
        path = write(tmp_path, "m.pt2", attacks.modified(clean["one"], add=add, config=edit))
        with pytest.raises(UnsafeFileError, match="pickled"):
            load_program(path)


def test_size_expressions_that_run_code_are_refused_though_torch_would_eval_them(clean, tmp_path):
    marker = tmp_path / "ran"
    path = write(tmp_path, "m.pt2", attacks.expression_injection(clean["dynamic"], marker))
    with pytest.raises(UnsafeFileError, match="size expression"):
        load_program(path)
    assert not marker.exists()
    with contextlib.suppress(Exception):  # whether torch then fails does not matter
        torch.export.load(path)
    assert marker.exists(), "the attack is real: torch's loader evaluated the expression"


def test_tree_specs_that_import_modules_are_refused_though_torch_would_import_them(clean, tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    module = f"xshap_payload_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a module in the directory a stranger's repository is checked in
    monkeypatch.delitem(sys.modules, module, raising=False)
    path = write(tmp_path, "m.pt2", attacks.enum_import(clean["one"], module))
    with pytest.raises(UnsafeFileError, match="tree spec holds a context other than plain keys"):
        load_program(path)
    assert not marker.exists()
    with contextlib.suppress(Exception):
        torch.export.load(path)
    assert marker.exists(), "the attack is real: torch's pytree reader imported the module"
    sys.modules.pop(module, None)


def test_argument_names_that_are_code_are_refused_as_torch_compiles_them(clean, tmp_path):
    """torch writes the saved argument names into the Python source of the module ``.module()`` builds (this one
    only fails to compile there; the names are held to identifiers so that none can be made to)."""
    marker = tmp_path / "ran"
    path = write(tmp_path, "m.pt2", attacks.argument_name_injection(clean["one"], marker))
    with pytest.raises(UnsafeFileError, match="argument name .* is not an identifier"):
        load_program(path)
    with pytest.raises(SyntaxError, match="tree_flatten_spec|invalid syntax"):
        torch.export.load(path).module()
    assert not marker.exists()


def test_guards_are_size_comparisons(clean, tmp_path):
    def guards(*code):
        return lambda document: document.update(guards_code=list(code))

    ok = write(tmp_path, "ok.pt2", attacks.modified(clean["one"], program=guards("L['x'].size()[0] > 2")))
    assert load_program(ok) is not None
    bad = attacks.modified(clean["one"], program=guards("L['x'].size()[0] > 2", "__import__('os').getcwd()"))
    with pytest.raises(UnsafeFileError, match="the guard"):
        load_program(write(tmp_path, "bad.pt2", bad))


def test_every_target_is_checked_even_in_a_node_without_outputs(clean, tmp_path):
    def edit(document):
        document["graph_module"]["graph"]["nodes"][0].pop("outputs")
        document["graph_module"]["graph"]["nodes"][0]["target"] = "torch.hub.load"

    with pytest.raises(UnsafeFileError, match="'torch.hub.load'"):
        load_program(write(tmp_path, "m.pt2", attacks.modified(clean["one"], program=edit)))


JSON_ENTRIES = (
    "models/model.json",
    "data/weights/model_weights_config.json",
    "data/constants/model_constants_config.json",
)
ODD_VALUES = (
    st.sampled_from(
        [None, True, 0, -1, 1 << 70, 1.5, float("nan"), "", "x", "__class__", "torch.os.system", "Symbol('s0')", 7, 13]
    )
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.sampled_from(["a", "as_int", "name"]), st.integers(), max_size=2)
)


def _containers(value, found):
    if isinstance(value, (dict, list)) and value:
        found.append(value)
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, found)
    return found


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_mutated_program_json_is_refused_cleanly_or_passed_on(clean, data):
    """Whatever value replaces whatever field of the program or its configs, the checks refuse it with an
    UnsafeFileError (exit 2) or pass it on; they never crash (which xshap check would report as its own bug)."""
    root, records = attacks.entries(clean["dynamic"])
    name = data.draw(st.sampled_from(JSON_ENTRIES))
    document = json.loads(records[name])
    for _ in range(data.draw(st.integers(1, 3))):
        containers = _containers(document, [])
        container = containers[data.draw(st.integers(0, len(containers) - 1))]
        keys = list(container) if isinstance(container, dict) else list(range(len(container)))
        container[data.draw(st.sampled_from(keys))] = data.draw(ODD_VALUES)
    archive = attacks.rezip(root, {**records, name: json.dumps(document).encode()})
    with contextlib.suppress(UnsafeFileError):
        checked_records(ZipArchive.parse(io.BytesIO(archive), "m.pt2", Limits()))


@pytest.mark.parametrize(
    "text, ok",
    [
        ("Symbol('s77', positive=True, integer=True)", True),
        ("Add(Mul(Integer(4), Symbol('s0', integer=True)), Integer(1))", True),
        ("Equality(Symbol('s0', positive=True), Integer(1))", True),
        ("FloorDiv(Symbol('s0'), Integer(2))", True),
        ("Mul(Float('1.5', precision=53), Symbol('s0'))", True),
        ("-int_oo", True),
        ("Pow(Symbol('s0'), Integer(2))", True),
        ("__import__('os').system('id')", False),
        ("Symbol('s0').__class__", False),
        ("sympify('1')", False),
        ("Symbol('s0', evaluate=exec)", False),
        ("Pow(Integer(2), Integer(10000000000))", False),
        ("Integer(2) ** Integer(99)", False),
        ("Symbol('__builtins__')", False),
        ("lambda: 0", False),
        ("(lambda: 0)()", False),
        ("[Symbol('s0')][0]", False),
        ("Float('nan')", False),
        ("LShift(Integer(1), Integer(1000000000000))", False),
        ("Mul(" * 300 + "1" + ")" * 300, False),
    ],
)
def test_size_expression_grammar(text, ok):
    assert (expression_problem(text) is None) == ok, expression_problem(text)


@pytest.mark.parametrize(
    "target, inputs, reason",
    [
        ("torch.os.system", [("command", {"as_string": "touch x"})], "neither an ATen operator"),
        ("torch.ops.load_library", [("path", {"as_string": "/tmp/x.so"})], "neither an ATen operator"),
        ("builtins.exec", [("source", {"as_string": "1"})], "neither an ATen operator"),
        ("torch.ops.aten.save.default", [("filename", {"as_string": "/tmp/x"})], "takes a t|string argument"),
        ("torch.ops.aten.from_file.default", [("filename", {"as_string": "/etc/passwd"})], "'filename'"),
        ("torch.ops.aten.warn.default", [("message", {"as_string": "hi"})], "'message'"),
        ("torch.ops.aten.__class__.default", [], "calls"),
        ("torch.ops.aten.no_such_op.default", [], "does not have"),
        ("torch.ops.higher_order.cond", [], "neither an ATen operator"),
        ("torch.ops.mylib.custom.default", [], "neither an ATen operator"),
    ],
)
def test_graph_nodes_may_only_call_aten_operators_on_tensors(clean, tmp_path, target, inputs, reason):
    def edit(document):
        node = {
            "target": target,
            "inputs": [{"name": name, "arg": arg, "kind": 1} for name, arg in inputs],
            "outputs": [],
            "metadata": {},
            "name": "evil",
        }
        document["graph_module"]["graph"]["nodes"].insert(0, node)

    path = write(tmp_path, "m.pt2", attacks.modified(clean["one"], program=edit))
    with pytest.raises(UnsafeFileError, match=reason):
        load_program(path)


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda doc: doc["graph_module"]["graph"]["nodes"][0].update(name="x; import os"), "not an identifier"),
        (
            lambda doc: doc["graph_module"]["signature"]["input_specs"][0]["parameter"].update(
                parameter_name="__class__"
            ),
            "dotted path",
        ),
        (lambda doc: doc["graph_module"]["graph"]["nodes"][0]["inputs"][0]["arg"].update(as_graph={}), "nested graph"),
        (
            lambda doc: next(iter(doc["graph_module"]["graph"]["tensor_values"].values()))["sizes"].append(
                {"as_int": 1 << 40}
            ),
            "over the limit",
        ),
    ],
)
def test_names_nested_graphs_and_declared_sizes_are_checked(clean, tmp_path, edit, reason):
    path = write(tmp_path, "m.pt2", attacks.modified(clean["one"], program=edit))
    with pytest.raises(UnsafeFileError, match=reason):
        load_program(path)


def _first_weight(edit):
    def config(name, document):
        if "weights" in name:
            edit(next(iter(document["config"].values())))

    return config


@pytest.mark.parametrize(
    "edit, add, reason",
    [
        # an empty record makes torch allocate zeros of the declared size
        (
            lambda e: e["tensor_meta"].update(sizes=[{"as_int": 1 << 31}], strides=[{"as_int": 1}]),
            {"weight_0": b""},
            "over the limit",
        ),
        (lambda e: e["tensor_meta"].update(sizes=[{"as_int": 1000}], strides=[{"as_int": 1}]), {}, "past its record"),
        (lambda e: e["tensor_meta"].update(dtype=10), {}, "complex64"),
        (lambda e: e["tensor_meta"].update(layout=1), {}, "not a dense"),
        (lambda e: e["tensor_meta"]["sizes"].append({"as_expr": {"expr_str": "s0"}}), {}, "plain non-negative"),
        (lambda e: e.update(path_name="weight_77"), {}, "not one of its records"),
        (lambda e: None, {"weight_9": b"\0" * 8}, "listed by no entry"),
    ],
)
def test_weight_configs_are_checked_against_their_records(clean, tmp_path, edit, add, reason):
    extra = {f"data/weights/{name}": data for name, data in add.items()}
    path = write(tmp_path, "m.pt2", attacks.modified(clean["one"], add=extra, config=_first_weight(edit)))
    with pytest.raises(UnsafeFileError, match=reason):
        load_program(path)


def test_sample_inputs_must_load_with_weights_only(clean, tmp_path):
    marker = tmp_path / "ran"
    add = {"data/sample_inputs/model.pt": attacks.marker_pickle(marker)}
    with pytest.raises(UnsafeFileError, match="weights_only=True"):
        load_program(write(tmp_path, "m.pt2", attacks.modified(clean["one"], add=add)))
    assert not marker.exists()


def test_small_records_and_json_are_checked(clean, tmp_path):
    for add, reason in [
        ({"archive_format": b"zip"}, "archive_format record"),
        ({"byteorder": b"big"}, "byteorder record"),
        ({"models/model.json": b"{" * 100000}, "not valid JSON"),
        ({"extra/a.txt": b"\xff\xfe"}, "not UTF-8"),
    ]:
        with pytest.raises(UnsafeFileError, match=reason):
            load_program(write(tmp_path, "m.pt2", attacks.modified(clean["one"], add=add)))
    with pytest.raises(UnsafeFileError, match="no models/model.json"):
        load_program(write(tmp_path, "m.pt2", attacks.modified(clean["one"], drop=("models/model.json",))))


def test_dtype_table_matches_torch():
    from torch._export.serde import schema
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    for code, (name, size) in SCALAR_TYPES.items():
        dtype = _SERIALIZE_TO_TORCH_DTYPE[schema.ScalarType(code)]
        assert dtype == getattr(torch, name) and torch.empty(0, dtype=dtype).element_size() == size


# -- data files ---------------------------------------------------------------------------------------------


def test_npy_header_claims_are_checked_before_allocating(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileTooLargeError, match="over the limit"):
        load_array(write(tmp_path, "x.npy", attacks.npy_header((2_000_000, 2_000_000))))  # 4e12 elements
    with pytest.raises(UnsafeFileError, match="the file holds 0"):
        load_array(write(tmp_path, "x.npy", attacks.npy_header((10, 4))))
    with pytest.raises(UnsafeFileError, match="the file holds 327"):
        load_array(write(tmp_path, "x.npy", attacks.npy_header((10, 4)) + b"\0" * 327))
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    "array, reason",
    [
        (np.array([{"a": 1}], dtype=object), "allow_pickle"),
        (np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")]), "structured"),
        (np.zeros(3, dtype=np.complex64), "complex"),
        (np.array(["a", "b"]), "not numbers"),
    ],
)
def test_npy_holds_plain_real_numbers(tmp_path, array, reason):
    np.save(tmp_path / "x.npy", array, allow_pickle=True)
    with pytest.raises(UnsafeFileError, match=reason):
        load_array(tmp_path / "x.npy")


def test_npy_orders_and_byte_orders_load(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "f.npy", np.asfortranarray(values.astype(">f4")))
    loaded = load_array(tmp_path / "f.npy")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, values)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: torch.zeros(3, 4).to_sparse(), "sparse"),
        (lambda: torch.empty(1 << 40, device="meta"), "meta device"),
        (lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8), "quantised"),
        (lambda: torch.ones(3, dtype=torch.complex64), "complex"),
        (lambda: torch.zeros(1).expand(1 << 31), "over the limit"),  # a stride-0 view of 8 GB over 4 bytes
        (lambda: {"rows": torch.ones(3)}, "holds a dict"),
    ],
)
def test_pt_tensors_must_be_dense_real_and_small(tmp_path, make, reason):
    torch.save(make(), tmp_path / "x.pt")
    with pytest.raises(Exception, match=reason) as raised:
        load_array(tmp_path / "x.pt")
    assert raised.type.__name__ in ("UnsafeFileError", "FileTooLargeError", "InputError")


def test_pt_bfloat16_becomes_float32_with_a_note(tmp_path):
    values = torch.tensor([[1.5, -2.25], [3.0, 0.125]], dtype=torch.bfloat16)
    torch.save(values, tmp_path / "x.pt")
    with pytest.warns(UserWarning, match="bfloat16 values converted to float32"):
        loaded = load_array(tmp_path / "x.pt")
    assert loaded.dtype == np.float32 and np.array_equal(loaded, values.float().numpy())


def test_pt_pickled_globals_never_run(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(UnsafeFileError, match="weights_only=True"):
        load_array(write(tmp_path, "x.pt", attacks.marker_pickle(marker)))
    assert not marker.exists()


def test_pt_outside_the_torch_save_layout_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")  # TorchScript: code inside
    with pytest.raises(UnsafeFileError, match="not a torch.save file"):
        load_array(tmp_path / "script.pt")
    torch.save(torch.ones(3), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeFileError, match="not a ZIP archive"):
        load_array(tmp_path / "old.pt")


def test_pt_decompression_bomb_is_refused_from_its_headers(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileTooLargeError):
        load_array(write(tmp_path, "x.pt", attacks.bomb_tensor_file(1 << 30)))
    assert time.perf_counter() - start < 1.0


def test_pipes_and_devices_are_not_read(tmp_path):
    os.mkfifo(tmp_path / "x.npy")
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        load_array(tmp_path / "x.npy")


def test_deflated_records_in_limits_still_load(clean, tmp_path):
    """Re-zipped with deflate (by another tool), a program still loads: compression is not refused as such."""
    root, records = attacks.entries(clean["one"])
    data = build_zip(Layout(entries=[Crafted(f"{root}/{n}", d, method=8) for n, d in records.items()]))
    program = load_program(write(tmp_path, "m.pt2", data))
    assert {"0.weight", "2.bias"} <= set(program.state_dict)


def test_max_bytes_is_applied(clean, tmp_path):
    path = write(tmp_path, "m.pt2", clean["one"])
    with pytest.raises(FileTooLargeError):
        load_program(path, Limits(max_bytes=len(clean["one"]) // 4))
    np.save(tmp_path / "x.npy", np.zeros((100, 100)))
    with pytest.raises(FileTooLargeError):
        load_array(tmp_path / "x.npy", Limits(max_bytes=10_000))
