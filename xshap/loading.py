"""Loading models and arrays from files made by someone else: the application's entry point to ``xshap.files``.

``load_program`` reads a ``.pt2`` archive with xshap's own strict parser, refuses anything outside the layout
``torch.export.save`` writes (pickled payloads, compiled code, extra programs, ambiguous ZIP structure, sizes past
the limits) and hands torch an archive rebuilt from the checked entries; ``load_array`` reads ``.npy`` and
``.pt`` data the same way. See ``xshap.files``.
"""

from xshap.files import DEFAULT_MAX_BYTES, FileTooLargeError, Limits, UnsafeFileError, load_array, load_program

__all__ = ["DEFAULT_MAX_BYTES", "FileTooLargeError", "Limits", "UnsafeFileError", "load_array", "load_program"]
