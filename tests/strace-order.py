#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks the order of the system calls of every commit in strace logs.

Usage: strace-order.py LOG...   (logs of `strace -ff -y -s 0 -o PREFIX`:
one file per thread, every fd shown with its path, no buffer's bytes)

For every rename (or link, for archives that must never replace one) of a
temporary file -- a name starting with "." -- into place:

  the last write to the temporary file  <  an fsync/fdatasync of that fd
  <  the rename  <  an fsync of the folder's fd.

The audit log's next segment (".audit.log.next") is the one documented
exception (README: Audit, "How a segment closes"): audited opens wait only
for the renames, so its fd and the folder are synced right after them; for
it the order checked is write < rename < fdatasync of that fd < fsync of
the folder.

Prints one line per commit ("ok KIND NAME" or "bad KIND NAME: why") and
exits 1 if any is bad or none was found.
"""
import os
import re
import sys

CALL = re.compile(r'^(\w+)\((.*)\)\s+=\s+(-?\d+)')
FD = re.compile(r'^\s*(-?\d+|AT_FDCWD)<([^>]*)>')
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
DEFERRED = '.audit.log.next'


def args_of(text):
    """The arguments of a call: fds as (num, path), strings as str."""
    out = []
    depth = 0
    cur = ''
    for ch in text:
        if ch in '{[':
            depth += 1
        elif ch in '}]':
            depth -= 1
        if ch == ',' and depth == 0:
            out.append(cur.strip())
            cur = ''
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def fd_of(arg):
    m = FD.match(arg)
    return (m.group(1), m.group(2)) if m else (None, None)


def path_of(arg, base=None):
    m = STRING.match(arg)
    if not m:
        return None
    p = m.group(1)
    return p if p.startswith('/') or base is None else os.path.join(base, p)


def kind_of(name):
    if name == 'keyring':
        return 'state'
    if name.endswith('.json'):
        return 'archive'
    if name == 'rekey.journal':
        return 'journal'
    if name.endswith('.key'):
        return 'keyfile'
    if name.startswith('audit'):
        return 'audit'
    return 'other'


def events_of(path):
    """(call, fd, fd_path, src, dst) per completed call, in order."""
    ev = []
    with open(path, errors='replace') as f:
        for line in f:
            m = CALL.match(line)
            if not m or int(m.group(3)) < 0:
                continue
            call, a = m.group(1), args_of(m.group(2))
            if call in ('write', 'pwrite64', 'fsync', 'fdatasync',
                        'close'):
                num, p = fd_of(a[0])
                ev.append((call, num, p, None, None))
            elif call in ('rename', 'link'):
                ev.append((call, None, None, path_of(a[0]),
                           path_of(a[1])))
            elif call in ('renameat', 'renameat2', 'linkat'):
                _, d1 = fd_of(a[0])
                _, d2 = fd_of(a[2])
                ev.append((call, None, None, path_of(a[1], d1),
                           path_of(a[3], d2)))
    return ev


def check(ev, i):
    """Why commit ev[i] is out of order, or None."""
    src, dst = ev[i][3], ev[i][4]
    folder = os.path.dirname(dst)
    deferred = os.path.basename(src) == DEFERRED
    w = None
    for j in range(i - 1, -1, -1):
        if ev[j][0] in ('write', 'pwrite64') and ev[j][2] == src:
            w = j
            break
    if w is None:
        return 'no write to it before the rename'
    fd = ev[w][1]
    synced = None
    span = range(w + 1, len(ev)) if deferred else range(w + 1, i)
    for j in span:
        if ev[j][0] in ('fsync', 'fdatasync') and ev[j][1] == fd:
            synced = j
            break
        if ev[j][0] == 'close' and ev[j][1] == fd:
            break
    if synced is None:
        return 'its fd is not synced after its last write and ' + (
            'after the rename' if deferred else 'before the rename')
    after = max(i, synced)
    for j in range(after + 1, len(ev)):
        if ev[j][0] in ('fsync', 'fdatasync') and ev[j][2] == folder:
            return None
    return 'the folder %s is not synced after the rename' % folder


def main(logs):
    bad = found = 0
    for log in logs:
        ev = events_of(log)
        for i, e in enumerate(ev):
            if e[0] not in ('rename', 'renameat', 'renameat2', 'link',
                            'linkat') or not e[3] or not e[4]:
                continue
            if not os.path.basename(e[3]).startswith('.'):
                continue
            name = os.path.basename(e[4])
            kind = kind_of(name)
            if os.path.basename(e[3]) == DEFERRED:
                kind = 'audit-segment'
            elif kind == 'audit':
                kind = 'audit-rekey'
            why = check(ev, i)
            found += 1
            if why:
                bad += 1
                print('bad %s %s: %s' % (kind, name, why))
            else:
                print('ok %s %s' % (kind, name))
    if found == 0:
        print('bad: no commit found in %s' % ' '.join(logs))
    return 1 if bad or not found else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
