"""Exceptions raised by rrloader.

Every message names what and where: the file, the byte offset, the segment, the column
or the index value involved. The native engine reports a status code; the single
mapping from codes to these classes is in ``_install_exception_table`` below (and
documented in ``cpp/bindings/module.cc``).
"""

from __future__ import annotations


class RrloaderError(Exception):
    """Base class of every rrloader error."""


class RrdFormatError(RrloaderError, ValueError):
    """The bytes of an .rrd file are not a valid recording."""


class RrdTruncatedError(RrdFormatError):
    """The file ends before a structure it declares is complete."""


class RrdCorruptError(RrdFormatError):
    """Bytes are present but invalid: magic, checksum, protobuf, LZ4 or Arrow payload."""


class RrdUnsupportedError(RrdFormatError):
    """A valid file of a kind rrloader does not read (e.g. written before Rerun 0.23)."""


class NotFoundError(RrloaderError, LookupError):
    """A path, segment, timeline or column that does not exist."""


class NoRecordingsError(NotFoundError, FileNotFoundError):
    """A path that holds no .rrd recordings (or does not exist)."""


class InvalidArgumentError(RrloaderError, ValueError):
    """The request is inconsistent (e.g. two files with the same recording id)."""


class RrloaderIOError(RrloaderError, OSError):
    """The operating system failed a read."""


# StatusCode numbers of cpp/rrloader/common/status.h.
_CODE_TRUNCATED = 1
_CODE_CORRUPT = 2
_CODE_UNSUPPORTED = 3
_CODE_NOT_FOUND = 4
_CODE_INVALID_ARGUMENT = 5
_CODE_IO = 6
_CODE_INTERNAL = 7


def _install_exception_table(core) -> None:
    core._set_exception_table(
        {
            _CODE_TRUNCATED: RrdTruncatedError,
            _CODE_CORRUPT: RrdCorruptError,
            _CODE_UNSUPPORTED: RrdUnsupportedError,
            _CODE_NOT_FOUND: NotFoundError,
            _CODE_INVALID_ARGUMENT: InvalidArgumentError,
            _CODE_IO: RrloaderIOError,
            _CODE_INTERNAL: RrloaderError,
        }
    )
