"""Writing ZIP archives byte by byte, consistent or not, to attack xshap's archive reader with.

``build_zip`` lays out local headers, data, data descriptors, the central directory and the end records from
``Crafted`` entries; every field can be made to lie (a local name other than the directory's, a declared size
other than the data's, a method number, flags, extra fields), and the layout can be given prepended or
appended bytes, a comment, or ZIP64 records. ``two_views`` writes one file that readers resolving the ZIP64
locator differently see as two different archives.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field, replace


@dataclass
class Crafted:
    name: str
    data: bytes
    method: int = 0  # 0 stored, 8 deflated; any other number is written as is, data stored raw
    descriptor: bool = False  # sizes and CRC after the data instead of in the local header
    local_name: str | None = None  # the name in the local header (default: the directory's)
    declared_size: int | None = None  # the uncompressed size written in the headers (default: the real one)
    crc: int | None = None
    flags: int = 0
    local_extra: bytes = b""
    central_extra: bytes = b""
    external_attr: int = 0
    comment: bytes = b""
    offset_shift: int = 0  # added to the local header offset the directory records
    listed: bool = True  # written in the central directory
    version: int = 20  # "version needed to extract" in both headers
    stream: bytes | None = None  # the bytes to write as the entry's data (default: ``data``, deflated if method 8)

    def payload(self) -> bytes:
        if self.stream is not None:
            return self.stream
        if self.method == 8:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
            return compressor.compress(self.data) + compressor.flush()
        return self.data


@dataclass
class Layout:
    prefix: bytes = b""  # before the first local header
    suffix: bytes = b""  # after the end record
    comment: bytes = b""
    zip64: bool = False
    extra_end: bool = False  # a second (empty) end record in front of the real one
    count_delta: int = 0  # added to the entry count the end record declares
    entries: list[Crafted] = field(default_factory=list)


def _local(entry: Crafted, payload: bytes) -> bytes:
    name = (entry.local_name if entry.local_name is not None else entry.name).encode("utf-8", "surrogatepass")
    size = entry.declared_size if entry.declared_size is not None else len(entry.data)
    crc = entry.crc if entry.crc is not None else zlib.crc32(entry.data)
    flags = entry.flags | (0x0008 if entry.descriptor else 0)
    if entry.descriptor:
        header_crc, header_csize, header_size = 0, 0, 0
    else:
        header_crc, header_csize, header_size = crc, len(payload), size
    head = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", entry.version, flags, entry.method, 0, 0x21, header_crc, header_csize,
        header_size, len(name), len(entry.local_extra),
    )  # fmt: skip
    out = head + name + entry.local_extra + payload
    if entry.descriptor:
        out += struct.pack("<4sIII", b"PK\x07\x08", crc, len(payload), size)
    return out


def _central(entry: Crafted, payload: bytes, offset: int, zip64: bool) -> bytes:
    name = entry.name.encode("utf-8", "surrogatepass")
    size = entry.declared_size if entry.declared_size is not None else len(entry.data)
    crc = entry.crc if entry.crc is not None else zlib.crc32(entry.data)
    flags = entry.flags | (0x0008 if entry.descriptor else 0)
    extra = entry.central_extra
    csize32, size32, offset32 = len(payload), size, offset + entry.offset_shift
    if zip64:
        extra = struct.pack("<HHQQQ", 1, 24, size, len(payload), offset + entry.offset_shift) + extra
        csize32 = size32 = offset32 = 0xFFFFFFFF
    return (
        struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            45 if zip64 else 20,
            max(entry.version, 45 if zip64 else 20),
            flags,
            entry.method,
            0,
            0x21,
            crc,
            csize32,
            size32,
            len(name),
            len(extra),
            len(entry.comment),
            0,
            0,
            entry.external_attr,
            offset32,
        )  # fmt: skip
        + name
        + extra
        + entry.comment
    )


def _end_records(count: int, cd_size: int, cd_offset: int, zip64: bool, comment: bytes) -> bytes:
    out = b""
    if zip64:
        record_offset = cd_offset + cd_size
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record_offset, 1)
        count16, size32, offset32 = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        count16, size32, offset32 = count, cd_size, cd_offset
    return (
        out + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count16, count16, size32, offset32, len(comment)) + comment
    )


def build_zip(layout: Layout) -> bytes:
    """The bytes of the archive ``layout`` describes."""
    out = bytearray(layout.prefix)
    central = bytearray()
    listed = 0
    for entry in layout.entries:
        payload = entry.payload()
        offset = len(out) - len(layout.prefix)
        out += _local(entry, payload)
        if entry.listed:
            central += _central(entry, payload, offset, layout.zip64)
            listed += 1
    cd_offset = len(out) - len(layout.prefix)
    out += central
    if layout.extra_end:
        out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0, 0, 0, 0, 0)
    out += _end_records(listed + layout.count_delta, len(central), cd_offset, layout.zip64, layout.comment)
    return bytes(out + layout.suffix)


def two_views(seen_by_zipfile: list[Crafted], seen_by_locator: list[Crafted]) -> bytes:
    """One file, two archives: Python's zipfile takes the ZIP64 end record right before the locator, a reader
    that follows the locator's offset (miniz, torch's) takes another one earlier in the file."""
    out = bytearray()
    directories = []
    for group in (seen_by_locator, seen_by_zipfile):
        central = bytearray()
        for entry in group:
            payload = entry.payload()
            central += _central(entry, payload, len(out), True)
            out += _local(entry, payload)
        directories.append((len(group), central))
    records = []
    for count, central in directories:
        cd_offset = len(out)
        out += central
        records.append(len(out))
        out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), cd_offset)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, records[0], 1)  # points at the first record
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


def entries_of(data: bytes) -> list[Crafted]:
    """The entries of a well-formed archive (read with zipfile), as ``Crafted`` (stored, no descriptor)."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [Crafted(info.filename, archive.read(info)) for info in archive.infolist()]


def with_entries(entries: list[Crafted], **changes) -> list[Crafted]:
    return [replace(entry, **changes) for entry in entries]
