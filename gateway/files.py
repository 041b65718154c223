"""Owner-only files and directories, whatever the process umask (I/O).

Databases (they hold logged bodies and the admin API's signing keys), state directories, keys, tokens,
archives and spool directories are for the service user alone (docs/operations.md, "Files and modes"). A
umask can only take bits away, so creating with mode 0600 / 0700 is enough for what we create ourselves;
but ``mkdir(parents=True)`` makes the missing parents with the umask's mode (0777 under umask 0), and SQLite
creates its database with 0644, so both go through here.

SQLite gives a database's ``-wal`` and ``-shm`` files the mode of the database file itself, which is why
creating the (empty) database file first with 0600 covers all three.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """Create ``path`` and every missing parent with mode 0700 (existing directories keep their mode).

    Raises:
        OSError: a directory cannot be created.
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by someone else: theirs to set
            continue
        os.chmod(d, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask only downwards; say it exactly
    return path


def private_file(path: str | Path) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist (its parents with :func:`private_dir`); an
    existing file is left as it is.

    Raises:
        OSError: the file cannot be created.
    """
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def write_private_text(path: str | Path, text: str) -> Path:
    """Write ``text`` into ``path`` with mode 0600 (created so, or set so if it existed).

    Raises:
        OSError: the file cannot be written.
    """
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
