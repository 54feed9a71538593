# -*- coding: utf-8 -*-
# Copyright: release-rollback contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writes on a host that never follow a link the rollback did not create.

Every file the rollback writes under a name someone else could have prepared (a mark such as
``ROLLED_BACK``, a lock, a temporary ``*.rollback-tmp`` file, a kept copy, a run record) is opened
relative to its directory's file descriptor with ``O_NOFOLLOW`` and, for new files, ``O_EXCL``,
then renamed into place (a rename replaces a link, it never writes through it). A link found at
such a name stops the work with :class:`UnsafePath`, naming the path; nothing is written through it.
Modes are set explicitly, so a umask of 000 cannot make a private file world-readable. Pure Python,
standard library only.
"""

from __future__ import annotations

import contextlib
import os
import stat

TMP_SUFFIX = ".rollback-tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UnsafePath(OSError):
    """A name the rollback would write is a link (or not a regular file); the message names it."""


def _link_text(path):
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def refuse_link(path, what="the rollback"):
    """Raise UnsafePath when ``path`` is a symbolic link; return its lstat (or None when absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(
            "%s is a symbolic link (to %s) that %s did not create, and it never writes through a link: "
            "find out who put it there and remove it, then try again" % (path, _link_text(path), what)
        )
    return st


def refuse_links(paths, what="the rollback"):
    """``refuse_link`` for each path: the first link found stops everything, before anything is written."""
    for path in paths:
        refuse_link(path, what)


def open_dir(path):
    """A file descriptor of the directory ``path``; its last component must not be a link."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC)
    except OSError:
        if os.path.islink(path):
            refuse_link(path)
        raise


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write_file(path, data, mode=0o644, like=None, tmp=None, final_may_be_link=False):
    """Write ``data`` (bytes or text) to ``path`` atomically, through ``tmp`` in the same directory.

    ``tmp`` (default ``<name>.rollback-tmp``) is created with ``O_EXCL | O_NOFOLLOW`` relative to the
    directory's descriptor (a leftover regular file of a killed attempt is removed first; a link there
    is refused), written, given ``mode`` (or ``like``'s mode and owner, an ``os.stat_result``) and
    synced, then renamed over ``path``. ``path`` itself may be a link only with ``final_may_be_link``
    (the rename then replaces the link, never its target).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory, name = os.path.split(os.path.abspath(path))
    tmp_name = os.path.basename(tmp) if tmp else name + TMP_SUFFIX
    dfd = open_dir(directory)
    try:
        tmp_path = os.path.join(directory, tmp_name)
        st = refuse_link(tmp_path)
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise UnsafePath("%s is in the way and is not a regular file: remove it, then try again" % tmp_path)
            os.unlink(tmp_name, dir_fd=dfd)
        if not final_may_be_link:
            refuse_link(os.path.join(directory, name))
        fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=dfd)
        try:
            try:
                _write_all(fd, data)
                if like is not None:
                    os.fchmod(fd, like.st_mode & 0o7777)
                    with contextlib.suppress(OSError):  # not allowed for this user: it keeps the user's ownership
                        os.fchown(fd, like.st_uid, like.st_gid)
                else:
                    os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp_name, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def append_line(path, line, mode=0o644):
    """Append ``line`` to ``path`` (created with ``mode`` when absent); a link there is refused."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC, mode)
    except OSError:
        refuse_link(path)
        raise
    try:
        _write_all(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def read_bytes(path, limit=None):
    """The content of ``path`` (its first ``limit`` bytes); a link there is refused, a missing file is None."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        refuse_link(path)
        raise
    with os.fdopen(fd, "rb") as fh:
        return fh.read() if limit is None else fh.read(limit)


def read_text(path, limit=65536):
    """The first ``limit`` bytes of ``path`` as text; a link there is refused, a missing file is None."""
    data = read_bytes(path, limit)
    return None if data is None else data.decode("utf-8", "replace")


def open_private(path, flags=os.O_RDWR | os.O_CREAT, mode=0o600):
    """A descriptor of ``path`` opened without following a link at it, with ``mode`` set explicitly
    when it is created (a lock file, an append-only record)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError:
        refuse_link(path)
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePath("%s is not a regular file: remove it, then try again" % path)
    return fd


def make_private_dir(path):
    """Create the directory ``path`` with mode 0700 whatever the umask; an existing link there is refused.

    Returns False when it already existed as a directory (its mode is left as it is)."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        refuse_link(path, "this tool")
        if not os.path.isdir(path):
            raise
        return False
    os.chmod(path, 0o700)
    return True
