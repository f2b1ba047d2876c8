"""A strict reader of ZIP archives: the one parser that decides what an archive holds.

ZIP leaves room for one file to be read as different archives by different readers: a second end record in a
comment, a ZIP64 locator pointing elsewhere than where the record is, data before the first entry, local headers
that disagree with the central directory, entries that overlap or that no directory lists. This reader accepts
only the unambiguous layout that ``torch.save`` and ``torch.export.save`` write (and that ``zipfile`` writes):

- the end record is the file's last 22 bytes, without a comment; a ZIP64 locator, if any, sits right before it
  and points at the ZIP64 record right before itself; one disk;
- the central directory ends exactly where the end records start, and lists exactly the declared entries;
- the entries tile the file from byte 0 up to the directory: each local header, its data and its data
  descriptor, then the next, with no gap, overlap or unlisted bytes; local header and directory agree on
  name, flags, method, CRC and sizes;
- names are relative ASCII paths of plain characters (no absolute paths, ``..``, backslashes, NULs, drive
  letters, directories), unique even ignoring case; no encryption, comments or extra fields outside a short
  allow-list (the Unicode-path field that renames an entry for some readers is refused);
- methods: stored or deflated; sizes from the directory are checked against the limits before anything is
  read, and enforced while inflating, with the CRC checked at the end.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from xshap.files.errors import FileTooLargeError, UnsafeFileError
from xshap.files.limits import Limits

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_END = b"PK\x05\x06"
_END64 = b"PK\x06\x06"
_LOCATOR64 = b"PK\x06\x07"
_DESCRIPTOR = b"PK\x07\x08"

_END_SIZE, _LOCATOR64_SIZE, _END64_SIZE = 22, 20, 56
_LOCAL_SIZE, _CENTRAL_SIZE = 30, 46

STORED, DEFLATED = 0, 8
_FLAG_DESCRIPTOR, _FLAG_UTF8 = 0x0008, 0x0800
_ALLOWED_FLAGS = _FLAG_DESCRIPTOR | _FLAG_UTF8 | 0x0006  # bits 1-2: deflate's speed options
_ZIP64_EXTRA = 0x0001
# extra fields that say nothing about an entry's name or content: ZIP64 sizes, torch's alignment padding
# ("FB"), timestamps and Unix owners (Info-ZIP), NTFS times
_ALLOWED_EXTRAS = {_ZIP64_EXTRA, 0x4246, 0x5455, 0x7875, 0x000A}
_MAX_NAME, _MAX_EXTRA = 1024, 1024
_MAX_VERSION = 45  # "version needed to extract": 4.5 is ZIP64, the newest feature this reader reads
_NAME_PART = re.compile(r"^[A-Za-z0-9_.+=@,-]+$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipEntry:
    """One entry as the central directory lists it (and its local header agrees)."""

    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    data_offset: int


class ZipArchive:
    """The entries of a strictly parsed ZIP archive; ``read`` inflates one, within the limits."""

    def __init__(self, source: BinaryIO, entries: list[ZipEntry], what: str, limits: Limits):
        self._source = source
        self.entries = entries
        self.what = what
        self.limits = limits
        self._by_name = {entry.name: entry for entry in entries}

    @classmethod
    def parse(cls, source: BinaryIO, what: str, limits: Limits) -> ZipArchive:
        """Parse the structure of the archive in ``source`` (a seekable binary file) and check every rule."""
        size = source.seek(0, os.SEEK_END)
        return cls(source, _parse(source, size, what, limits), what, limits)

    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def entry(self, name: str) -> ZipEntry:
        return self._by_name[name]

    def read(self, name: str, max_size: int | None = None) -> bytes:
        """The uncompressed bytes of one entry, refused past ``max_size`` (default: the archive's limit)."""
        entry = self._by_name[name]
        cap = self.limits.max_bytes if max_size is None else max_size
        if entry.size > cap:
            raise FileTooLargeError(
                f"{self.what}: entry {name} would inflate to {entry.size:,} bytes, over the limit of {cap:,}"
            )
        return _read_entry(self._source, entry, self.what)


def _fail(what: str, problem: str) -> UnsafeFileError:
    return UnsafeFileError(f"refusing {what}: {problem}")


def _read_at(source: BinaryIO, offset: int, length: int) -> bytes:
    source.seek(offset)
    data = source.read(length)
    return data if len(data) == length else b""


def _parse(source: BinaryIO, size: int, what: str, limits: Limits) -> list[ZipEntry]:
    if size < _END_SIZE:
        raise _fail(what, "not a ZIP archive (too short)")
    end = _read_at(source, size - _END_SIZE, _END_SIZE)
    if end[:4] != _END:
        raise _fail(what, "not a ZIP archive, or data after its end record (an archive comment or appended bytes)")
    disk, cd_disk, count_disk, count, cd_size, cd_offset, comment = struct.unpack("<HHHHIIH", end[4:])
    if comment:
        raise _fail(what, "the archive has a comment (a second end record can hide there)")
    if disk or cd_disk or count_disk != count:
        raise _fail(what, "the archive spans several disks")
    cd_end = size - _END_SIZE
    locator = _read_at(source, size - _END_SIZE - _LOCATOR64_SIZE, _LOCATOR64_SIZE) if size >= 42 else b""
    if locator[:4] == _LOCATOR64:
        count, cd_size, cd_offset, cd_end = _zip64_end(source, size, locator, (count, cd_size, cd_offset), what)
    elif 0xFFFF in (count,) or 0xFFFFFFFF in (cd_size, cd_offset):
        raise _fail(what, "the end record says ZIP64 but there is no ZIP64 locator before it")
    if count > limits.max_entries:
        raise _fail(what, f"{count:,} entries (at most {limits.max_entries:,})")
    if cd_offset + cd_size != cd_end:
        raise _fail(what, "the central directory does not end where the end records start")
    directory = _read_at(source, cd_offset, cd_size)
    if len(directory) != cd_size:
        raise _fail(what, "the central directory lies outside the file")
    entries = _central_directory(directory, count, what)
    _check_names(entries, what)
    total = sum(entry.size for entry in entries)
    if total > limits.max_bytes:
        raise FileTooLargeError(
            f"refusing {what}: its entries inflate to {total:,} bytes, over the limit of {limits.max_bytes:,} "
            "(--max-bytes)"
        )
    for entry in entries:
        _check_sizes(entry, limits, what)
    return _local_headers(source, entries, cd_offset, what)


def _zip64_end(source: BinaryIO, size: int, locator: bytes, legacy: tuple, what: str) -> tuple[int, int, int, int]:
    record_disk, record_offset, disks = struct.unpack("<IQI", locator[4:])
    expected = size - _END_SIZE - _LOCATOR64_SIZE - _END64_SIZE
    if record_disk or disks != 1:
        raise _fail(what, "the ZIP64 locator names several disks")
    if record_offset != expected:
        raise _fail(what, "the ZIP64 locator points elsewhere than the ZIP64 end record before it (two end records)")
    record = _read_at(source, expected, _END64_SIZE)
    if record[:4] != _END64:
        raise _fail(what, "no ZIP64 end record where the locator points")
    length, _made, _needed, disk, cd_disk, count_disk, count, cd_size, cd_offset = struct.unpack(
        "<QHHIIQQQQ", record[4:]
    )
    if length != _END64_SIZE - 12:
        raise _fail(what, "the ZIP64 end record has extensible data")
    if disk or cd_disk or count_disk != count:
        raise _fail(what, "the ZIP64 end record names several disks")
    for value, legacy_value, sentinel in zip((count, cd_size, cd_offset), legacy, (0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)):
        if legacy_value not in (value, sentinel):
            raise _fail(what, "the end record and the ZIP64 end record disagree (two views of one archive)")
    return count, cd_size, cd_offset, expected


def _extras(data: bytes, what: str, name: str) -> dict[int, bytes]:
    fields, position = {}, 0
    while position < len(data):
        if position + 4 > len(data):
            raise _fail(what, f"entry {name!r}: a truncated extra field")
        field_id, length = struct.unpack("<HH", data[position : position + 4])
        body = data[position + 4 : position + 4 + length]
        if len(body) != length:
            raise _fail(what, f"entry {name!r}: an extra field runs past its header")
        if field_id not in _ALLOWED_EXTRAS:
            raise _fail(what, f"entry {name!r}: extra field 0x{field_id:04x} is not allowed (it can rename an entry)")
        if field_id in fields:
            raise _fail(what, f"entry {name!r}: extra field 0x{field_id:04x} appears twice")
        fields[field_id] = body
        position += 4 + length
    return fields


def _zip64_values(extra: bytes, wanted: list[str], what: str, name: str) -> dict[str, int]:
    """The ZIP64 extra field's values: the 8-byte sizes and offset (and 4-byte disk) whose 32-bit field said so."""
    widths = {"size": 8, "compressed_size": 8, "header_offset": 8, "disk": 4}
    if len(extra) != sum(widths[w] for w in wanted):
        raise _fail(what, f"entry {name!r}: the ZIP64 extra field does not hold exactly the values it must")
    values, position = {}, 0
    for key in wanted:
        width = widths[key]
        values[key] = int.from_bytes(extra[position : position + width], "little")
        position += width
    return values


def _decode_name(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(what, f"entry name {raw[:80]!r} is not plain ASCII") from None


def _central_directory(directory: bytes, count: int, what: str) -> list[ZipEntry]:
    entries, position = [], 0
    for _ in range(count):
        header = directory[position : position + _CENTRAL_SIZE]
        if len(header) != _CENTRAL_SIZE or header[:4] != _CENTRAL:
            raise _fail(what, "the central directory holds fewer entries than the end record declares")
        (_made, needed, flags, method, _time, _date, crc, csize, usize, name_len, extra_len, comment_len, disk) = (
            struct.unpack("<HHHHHHIIIHHHH", header[4:36])
        )
        _internal, external, offset = struct.unpack("<HII", header[36:46])
        body_end = position + _CENTRAL_SIZE + name_len + extra_len + comment_len
        if body_end > len(directory):
            raise _fail(what, "a central directory entry runs past the directory")
        raw_name = directory[position + _CENTRAL_SIZE : position + _CENTRAL_SIZE + name_len]
        name = _decode_name(raw_name, what)
        extra = directory[position + _CENTRAL_SIZE + name_len : position + _CENTRAL_SIZE + name_len + extra_len]
        position = body_end
        if comment_len:
            raise _fail(what, f"entry {name!r} has a comment")
        if not 0 < name_len <= _MAX_NAME or extra_len > _MAX_EXTRA:
            raise _fail(what, f"entry {name!r}: name or extra field too long")
        if needed > _MAX_VERSION:
            raise _fail(what, f"entry {name!r} needs ZIP features of version {needed / 10:.1f} (at most 4.5)")
        _check_flags_and_method(flags, method, name, what)
        if (external >> 16) & 0o170000 not in (0, 0o100000) or external & 0x10:
            raise _fail(what, f"entry {name!r} is a link, directory or device, not a plain file")
        fields = _extras(extra, what, name)
        wanted = [
            k for k, v in (("size", usize), ("compressed_size", csize), ("header_offset", offset)) if v == 0xFFFFFFFF
        ]
        if disk == 0xFFFF:
            wanted.append("disk")
        if wanted or _ZIP64_EXTRA in fields:
            values = _zip64_values(fields.get(_ZIP64_EXTRA, b""), wanted, what, name)
            usize = values.get("size", usize)
            csize = values.get("compressed_size", csize)
            offset = values.get("header_offset", offset)
            disk = values.get("disk", disk)
        if disk:
            raise _fail(what, f"entry {name!r} starts on another disk")
        entries.append(ZipEntry(name, flags, method, crc, csize, usize, offset, -1))
    if position != len(directory):
        raise _fail(what, "the central directory holds more than the declared entries")
    return entries


def _check_flags_and_method(flags: int, method: int, name: str, what: str) -> None:
    if flags & 0x0001 or flags & 0x0040 or flags & 0x2000:
        raise _fail(what, f"entry {name!r} is encrypted")
    if flags & ~_ALLOWED_FLAGS:
        raise _fail(what, f"entry {name!r} has flags 0x{flags:04x} this reader does not accept")
    if method not in (STORED, DEFLATED):
        raise _fail(what, f"entry {name!r} uses compression method {method}; only stored (0) and deflated (8)")


def check_name(name: str) -> str | None:
    """Why ``name`` is not a safe relative entry name, or None if it is."""
    if "\x00" in name:
        return "holds a NUL"
    if "\\" in name:
        return "holds a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is absolute"
    parts = name.split("/")
    if any(part in (".", "..") for part in parts):
        return "has '.' or '..' components"
    if any(part == "" for part in parts):
        return "has an empty component (a directory or '//')"
    bad = [part for part in parts if not _NAME_PART.match(part)]
    if bad:
        return f"has characters outside [A-Za-z0-9_.+=@,-] in {bad[0][:40]!r}"
    return None


def _check_names(entries: list[ZipEntry], what: str) -> None:
    seen: dict[str, str] = {}
    for entry in entries:
        problem = check_name(entry.name)
        if problem:
            raise _fail(what, f"entry name {entry.name[:120]!r} {problem}")
        folded = entry.name.casefold()
        if folded in seen:
            raise _fail(what, f"entry {entry.name!r} appears twice (as {seen[folded]!r})")
        seen[folded] = entry.name


def deflate_bound(size: int) -> int:
    """The most bytes deflate needs for ``size`` bytes of any content (zlib's compressBound, with room)."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 64


def _check_sizes(entry: ZipEntry, limits: Limits, what: str) -> None:
    if entry.method == STORED and entry.compressed_size != entry.size:
        raise _fail(what, f"stored entry {entry.name!r} has different compressed and uncompressed sizes")
    if entry.method == DEFLATED:
        if entry.compressed_size > deflate_bound(entry.size):
            raise _fail(what, f"deflated entry {entry.name!r} is larger than deflate could make it")
        if entry.size > (1 << 20) and entry.size > limits.max_deflate_ratio * entry.compressed_size:
            raise FileTooLargeError(
                f"refusing {what}: entry {entry.name!r} would inflate {entry.compressed_size:,} bytes to "
                f"{entry.size:,}, more than {limits.max_deflate_ratio}x (a decompression bomb)"
            )


def _local_headers(source: BinaryIO, entries: list[ZipEntry], cd_offset: int, what: str) -> list[ZipEntry]:
    """Check that the entries tile the file from 0 to the directory; return them with their data offsets."""
    ordered = sorted(range(len(entries)), key=lambda i: entries[i].header_offset)
    located: list[ZipEntry | None] = [None] * len(entries)
    position = 0
    for rank, index in enumerate(ordered):
        entry = entries[index]
        if entry.header_offset != position:
            problem = "data before the first entry" if rank == 0 else "a gap or an overlap between entries"
            raise _fail(what, f"{problem} (at byte {min(position, entry.header_offset):,})")
        next_start = entries[ordered[rank + 1]].header_offset if rank + 1 < len(ordered) else cd_offset
        located[index], position = _local_entry(source, entry, next_start, what), next_start
    if position != cd_offset:  # no entries, yet bytes before the directory
        raise _fail(what, "bytes before the central directory that no entry accounts for")
    return [entry for entry in located if entry is not None]


def _local_entry(source: BinaryIO, entry: ZipEntry, next_start: int, what: str) -> ZipEntry:
    header = _read_at(source, entry.header_offset, _LOCAL_SIZE)
    if header[:4] != _LOCAL:
        raise _fail(what, f"no local header where the directory puts entry {entry.name!r}")
    needed, flags, method, _time, _date, crc, csize, usize, name_len, extra_len = struct.unpack(
        "<HHHHHIIIHH", header[4:]
    )
    raw_name = _read_at(source, entry.header_offset + _LOCAL_SIZE, name_len)
    if raw_name != entry.name.encode("ascii"):
        raise _fail(what, f"the local header of {entry.name!r} names it {raw_name[:80]!r}")
    if extra_len > _MAX_EXTRA:
        raise _fail(what, f"entry {entry.name!r}: local extra field too long")
    extra = _read_at(source, entry.header_offset + _LOCAL_SIZE + name_len, extra_len)
    if len(extra) != extra_len:
        raise _fail(what, f"entry {entry.name!r} runs past the end of the file")
    fields = _extras(extra, what, entry.name)
    if needed > _MAX_VERSION:
        raise _fail(what, f"entry {entry.name!r} needs ZIP features of version {needed / 10:.1f} (at most 4.5)")
    if flags != entry.flags or method != entry.method:
        raise _fail(what, f"the local header of {entry.name!r} disagrees with the central directory on flags or method")
    local = {"crc": crc, "compressed_size": csize, "size": usize}
    if _ZIP64_EXTRA in fields:  # a local ZIP64 field holds both sizes, 8 bytes each
        if len(fields[_ZIP64_EXTRA]) < 16:
            raise _fail(what, f"entry {entry.name!r}: a short local ZIP64 field")
        local["size"] = int.from_bytes(fields[_ZIP64_EXTRA][0:8], "little")
        local["compressed_size"] = int.from_bytes(fields[_ZIP64_EXTRA][8:16], "little")
    elif 0xFFFFFFFF in (csize, usize):
        raise _fail(what, f"the local header of {entry.name!r} says ZIP64 without a ZIP64 field")
    expected = {"crc": entry.crc, "compressed_size": entry.compressed_size, "size": entry.size}
    descriptor = bool(flags & _FLAG_DESCRIPTOR)
    for key, value in local.items():
        if value != expected[key] and not (descriptor and value == 0):
            raise _fail(what, f"the local header of {entry.name!r} disagrees with the central directory on {key}")
    data_offset = entry.header_offset + _LOCAL_SIZE + name_len + extra_len
    data_end = data_offset + entry.compressed_size
    trailer = next_start - data_end
    if trailer < 0:
        raise _fail(what, f"entry {entry.name!r} overlaps the next one (another entry hides inside its data)")
    if descriptor:
        _check_descriptor(source, entry, data_end, trailer, what)
    elif trailer != 0:
        raise _fail(what, f"bytes between entry {entry.name!r} and the next that no header accounts for")
    return ZipEntry(
        entry.name,
        entry.flags,
        entry.method,
        entry.crc,
        entry.compressed_size,
        entry.size,
        entry.header_offset,
        data_offset,
    )


def _check_descriptor(source: BinaryIO, entry: ZipEntry, offset: int, length: int, what: str) -> None:
    data = _read_at(source, offset, length) if 0 < length <= 24 else b""
    layouts = {16: "<4sIII", 24: "<4sIQQ", 12: "<III", 20: "<IQQ"}
    if length not in layouts or len(data) != length:
        raise _fail(what, f"entry {entry.name!r}: no valid data descriptor after its data")
    values = struct.unpack(layouts[length], data)
    if length in (16, 24):
        if values[0] != _DESCRIPTOR:
            raise _fail(what, f"entry {entry.name!r}: a data descriptor without its signature")
        values = values[1:]
    if tuple(values) != (entry.crc, entry.compressed_size, entry.size):
        raise _fail(what, f"the data descriptor of {entry.name!r} disagrees with the central directory")


def _read_entry(source: BinaryIO, entry: ZipEntry, what: str) -> bytes:
    chunks = _raw_chunks(source, entry)
    if entry.method == DEFLATED:
        chunks = _inflate(chunks, entry, what)
    data = b"".join(chunks)
    if len(data) != entry.size:
        raise _fail(what, f"entry {entry.name!r} holds {len(data):,} bytes, not the {entry.size:,} declared")
    if zlib.crc32(data) != entry.crc:
        raise _fail(what, f"entry {entry.name!r} fails its CRC check")
    return data


def _raw_chunks(source: BinaryIO, entry: ZipEntry) -> Iterator[bytes]:
    source.seek(entry.data_offset)
    remaining = entry.compressed_size
    while remaining:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


def _inflate(chunks: Iterator[bytes], entry: ZipEntry, what: str) -> Iterator[bytes]:
    """Inflate, never producing more than the declared size (plus one byte, to notice a lie); the stream must
    end exactly where the entry's data ends."""
    inflater = zlib.decompressobj(-15)
    produced = 0
    try:
        for chunk in chunks:
            if inflater.eof:
                raise _fail(what, f"the deflate stream of {entry.name!r} ends before its data does")
            pending = chunk
            while pending and not inflater.eof:
                out = inflater.decompress(pending, entry.size - produced + 1)
                produced += len(out)
                if produced > entry.size:
                    raise _fail(what, f"entry {entry.name!r} inflates to more than its declared {entry.size:,} bytes")
                yield out
                pending = inflater.unconsumed_tail
            if inflater.unused_data:
                raise _fail(what, f"the deflate stream of {entry.name!r} ends before its data does")
    except zlib.error as error:
        raise _fail(what, f"entry {entry.name!r} is not valid deflate data ({error})") from None
    if not inflater.eof:
        raise _fail(what, f"the deflate stream of {entry.name!r} is cut short")


def by_relative_name(archive: ZipArchive) -> dict[str, str]:
    """Name inside the root folder -> full entry name: torch's writers put every entry under one root folder."""
    roots = {name.split("/", 1)[0] for name in archive.names()}
    if len(roots) != 1 or any("/" not in name for name in archive.names()):
        raise _fail(archive.what, f"entries lie under {len(roots)} top folders, not one ({sorted(roots)[:4]})")
    (root,) = roots
    return {name[len(root) + 1 :]: name for name in archive.names()}
