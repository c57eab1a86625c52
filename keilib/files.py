"""Replacing a small file atomically: it is the old one or the new one, never half.

Used for everything kei rewrites whole: spool units, the scan cache, the
back-fill checkpoint, the status file.  The payload goes to a temporary file
beside the target (``.tmp-<name>``), then ``os.replace`` puts it in place.
``sync_file`` (fsync before the rename) makes the content survive a power cut;
``sync_dir`` (fsync of the directory after it) makes the rename survive too.
A file rewritten every minute for display only skips both: the SD card wears.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:      # annotations only: keilib does not import typing at run time
    from pathlib import Path
    from typing import Union

TEMP_PREFIX = ".tmp-"


def fsync_directory(directory: Union[str, Path]) -> None:
    """Make renames and deletions in ``directory`` durable."""
    fd = os.open(str(directory), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: Union[str, Path], name: str, payload: bytes, sync_dir: bool = True,
                 sync_file: bool = True) -> None:
    """Create or replace ``directory/name`` so that it is complete or absent."""
    # os.path, not pathlib: pathlib's imports (urllib, ipaddress ...) would
    # cost every daemon half a megabyte for two joins.
    temp = os.path.join(directory, TEMP_PREFIX + name)
    with open(temp, "wb") as handle:
        handle.write(payload)
        if sync_file:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temp, os.path.join(directory, name))
    if sync_dir:
        fsync_directory(directory)


def replace_file(path: Union[str, Path], payload: bytes, sync_dir: bool = True,
                 sync_file: bool = True) -> None:
    """``write_atomic`` for a path."""
    directory, name = os.path.split(os.path.abspath(path))
    write_atomic(directory, name, payload, sync_dir=sync_dir, sync_file=sync_file)
