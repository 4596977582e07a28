"""Outputs written whole or not at all.

Every file a command writes goes to a temporary file in the same folder (so the rename
cannot cross file systems), is flushed to disk, and is renamed into place only when it is
complete. An error or an interrupt part-way removes the temporary file and leaves any
older file of that name as it was. :class:`StagedFiles` does the same for a set of files
(``replay --out``): all are written first, then renamed one after another.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["StagedFiles", "atomic_output", "committed", "write_atomic", "written_summary"]

# The files renamed into place by this process, for an interrupt's message: the first
# NAMED_MAX by name, the rest only counted (a sweep writes a file per point, up to a
# million, and such a message could not name them all anyway).
NAMED_MAX = 20
_committed: list[Path] = []
_committed_count = 0


def committed() -> list[Path]:
    """The first files (up to NAMED_MAX) this process has renamed into place so far."""
    return list(_committed)


def _commit(path: Path) -> None:
    global _committed_count
    _committed_count += 1
    if len(_committed) < NAMED_MAX:
        _committed.append(path)


def written_summary() -> str:
    """What this process has written, for an interrupt's message: "nothing was
    written", or the files, each whole (the first NAMED_MAX named, then how many more)."""
    if not _committed_count:
        return "nothing was written"
    named = ", ".join(str(p) for p in _committed)
    more = _committed_count - len(_committed)
    return f"only these were written, each whole: {named}" + (f" and {more} more" if more else "")


@contextmanager
def atomic_output(path: str | os.PathLike[str], mode: int = 0o644) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes ``path`` when the block ends without an error."""
    target = Path(path)
    # The name first, the file inside the try: Ctrl-C between making the file and
    # entering the try (inside mkstemp, say) would leave it behind. os.urandom(n).hex() is
    # secrets.token_hex(n), without loading secrets (hmac, random) for every command.
    tmp = target.parent / f".{target.name}.{os.urandom(8).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except FileExistsError:  # another writer's (a 1 in 2**64 draw): not ours to remove
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.fchmod(fd, mode)  # the mode as asked for, whatever the umask
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, target)
        _commit(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_output(path, mode) as fp:
        fp.write(data)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFiles:
    """Several files of one folder, written under temporary names and renamed into place
    together when the ``with`` block ends without an error (else all are removed)."""

    def __init__(self, folder: str | os.PathLike[str], mode: int = 0o644) -> None:
        self.folder = Path(folder)
        self.mode = mode
        self._staged: list[tuple[Path, Path, IO[bytes]]] = []
        self._dropped: list[Path] = []
        # Every temporary name, recorded before its file is made: an interrupt (Ctrl-C
        # raises in whichever line the main thread is at, even right after a file is
        # created) can then leave no file that the cleanup does not know.
        self._temps: list[Path] = []

    def open(self, name: str) -> IO[bytes]:
        """A binary file that will become ``folder/name``."""
        target = self.folder / name
        while True:
            tmp = self.folder / f".{name}.{os.urandom(4).hex()}.tmp"
            self._temps.append(tmp)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
                break
            except FileExistsError:  # another writer's name: draw again
                self._temps.pop()
        os.fchmod(fd, self.mode)  # the mode exactly, whatever the umask
        fp = os.fdopen(fd, "wb")
        self._staged.append((target, tmp, fp))
        return fp

    def drop(self, name: str) -> None:
        """Remove ``folder/name`` (a file an earlier run wrote) when the others are renamed
        into place, so that the folder holds one run's outputs only."""
        self._dropped.append(self.folder / name)

    def __enter__(self) -> StagedFiles:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                for _target, tmp, fp in self._staged:
                    fp.close()  # the writer may have closed it already
                    _fsync_path(tmp)
                for target, tmp, _fp in self._staged:
                    os.replace(tmp, target)
                    _commit(target)
                for target in self._dropped:
                    target.unlink(missing_ok=True)
        finally:
            for _target, _tmp, fp in self._staged:
                fp.close()
            for tmp in self._temps:
                tmp.unlink(missing_ok=True)  # only what was not renamed is still there
