#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Finds key material in a core file of the keyfs daemon, and says where.

    core-scan.py collect MNT KEYS [--master FILE]
        Reads every key file of the tree mounted on MNT (current, previous,
        derived/*, versions/*/key, versions/*/derived/*) and adds the texts
        it has not seen yet to KEYS, a file of "label<TAB>text" lines
        (0600).  Run it after every change, so that keys that later drop out
        of the keyring are still searched for.  With --master, also the
        master key and its three subkeys (state seal, backups, audit chain),
        derived as crypto_kdf_derive_from_key does.  A line added by hand
        (a key given in the environment, say) is searched for too.

    core-scan.py scan CORE SMAPS KEYS [--expect-guarded]
        Searches CORE for every key of KEYS in text form (44 characters) and
        raw form (32 bytes), whole and in fragments (12 raw bytes, 16
        characters), and names the memory mapping each hit is in, from
        SMAPS (/proc/PID/smaps captured just before the core) and the
        threads' stack pointers in the core's notes.  Take the core with
        the guarded pages in it (gdb: "set dump-excluded-mappings on"), or
        the scan cannot show that it sees them.

        A hit is in guarded memory when its mapping is a sodium_malloc data
        region: anonymous, excluded from core dumps (sodium_mlock), with an
        inaccessible guard mapping right below and right above it, and no
        thread's stack pointer in it.  Any
        other hit is a defect.  Exit status 0 if there is none; 1 if there
        is any, or, with --expect-guarded, if no key was found in guarded
        memory either (the scan would be blind); 2 on bad input.

Key texts are never printed: only labels, forms, offsets and mappings.
"""
import base64
import bisect
import hashlib
import os
import struct
import sys

KDF_CONTEXT = b"keyfs-mk"
SUBKEYS = (("master/state", 1), ("master/backup", 2), ("master/audit", 3))
RAW_FRAGMENT = 12
TEXT_FRAGMENT = 16
PAGE = 4096

PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS = 1
PRSTATUS_PID_OFF = 32  # pr_pid in struct elf_prstatus (x86_64)
PRSTATUS_RSP_OFF = 112 + 19 * 8  # pr_reg[RSP] of struct user_regs_struct

USAGE = ("usage: core-scan.py collect MNT KEYS [--master FILE]\n"
         "       core-scan.py scan CORE SMAPS KEYS [--expect-guarded]")


def die(msg):
    print("core-scan: " + msg, file=sys.stderr)
    sys.exit(2)


# --- keys -------------------------------------------------------------------


def key_raw(text):
    raw = base64.urlsafe_b64decode(text)
    if len(text) != 44 or len(raw) != 32:
        raise ValueError("not a key")
    return raw


def key_text(raw):
    return base64.urlsafe_b64encode(raw).decode()


def subkey(master, ident):
    """crypto_kdf_derive_from_key(32, ident, "keyfs-mk", master)."""
    return hashlib.blake2b(b"", digest_size=32, key=master,
                           salt=struct.pack("<Q", ident),
                           person=KDF_CONTEXT).digest()


def load_keys(path):
    keys = {}
    try:
        with open(path) as f:
            for line in f:
                label, _, text = line.rstrip("\n").partition("\t")
                if label and text:
                    keys[label] = text
    except FileNotFoundError:
        pass
    return keys


def read_key(path):
    with open(path, "rb") as f:
        return f.read().decode().strip()


def collect(mnt, out, master):
    keys = load_keys(out)
    texts = set(keys.values())

    def add(label, text):
        key_raw(text)  # refuses anything that is not a key
        if text in texts:
            return
        n, base = 2, label
        while label in keys:  # a new key under a name seen before
            label = "%s#%d" % (base, n)
            n += 1
        keys[label] = text
        texts.add(text)

    for name in ("current", "previous"):
        if os.path.exists(os.path.join(mnt, name)):
            add(name, read_key(os.path.join(mnt, name)))
    for purpose in sorted(os.listdir(os.path.join(mnt, "derived"))):
        add("derived/" + purpose,
            read_key(os.path.join(mnt, "derived", purpose)))
    vdir = os.path.join(mnt, "versions")
    for v in sorted(os.listdir(vdir), key=int):
        add("v%s/key" % v, read_key(os.path.join(vdir, v, "key")))
        for purpose in sorted(os.listdir(os.path.join(vdir, v, "derived"))):
            add("v%s/derived/%s" % (v, purpose),
                read_key(os.path.join(vdir, v, "derived", purpose)))
    if master:
        m = key_raw(read_key(master))
        add("master", key_text(m))
        for label, ident in SUBKEYS:
            add(label, key_text(subkey(m, ident)))
    tmp = out + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for label, text in keys.items():
            f.write("%s\t%s\n" % (label, text))
    os.rename(tmp, out)
    print("core-scan: %d keys in %s" % (len(keys), os.path.basename(out)))


# --- the core ----------------------------------------------------------------


def read_core(path):
    """The core's bytes, its loads (offset, end, vaddr), notes, threads."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        die("%s: not a little-endian ELF64 file" % path)
    e_type, = struct.unpack_from("<H", data, 16)
    if e_type != 4:
        die("%s: not a core file" % path)
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    loads, notes, threads = [], [], []
    for i in range(e_phnum):
        p_type, _, off, vaddr, _, filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == PT_LOAD and filesz:
            loads.append((off, off + filesz, vaddr))
        elif p_type == PT_NOTE:
            notes.append((off, off + filesz))
            threads += thread_stacks(data[off:off + filesz])
    return data, loads, notes, threads


def thread_stacks(notes):
    """(tid, stack pointer) of every NT_PRSTATUS note."""
    out, pos = [], 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12 + ((namesz + 3) & ~3)
        desc = notes[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == NT_PRSTATUS and len(desc) >= PRSTATUS_RSP_OFF + 8:
            tid, = struct.unpack_from("<i", desc, PRSTATUS_PID_OFF)
            rsp, = struct.unpack_from("<Q", desc, PRSTATUS_RSP_OFF)
            out.append((tid, rsp))
    return out


def read_smaps(path):
    maps = []
    with open(path) as f:
        for line in f:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and ":" in head[3]:
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                maps.append({"lo": lo, "hi": hi, "perms": head[1],
                             "name": head[5].strip() if len(head) > 5
                             else "", "flags": set()})
            elif line.startswith("VmFlags:") and maps:
                maps[-1]["flags"] = set(line.split()[1:])
    maps.sort(key=lambda m: m["lo"])
    return maps


def classify(maps, threads):
    """Gives each mapping a description ('what') and 'guarded'."""
    for i, m in enumerate(maps):
        below = maps[i - 1] if i > 0 else None
        above = maps[i + 1] if i + 1 < len(maps) else None
        tids = [str(t) for t, sp in threads if m["lo"] <= sp < m["hi"]]
        guard_below = bool(below and below["hi"] == m["lo"]
                           and below["perms"].startswith("---"))
        guard_above = bool(above and above["lo"] == m["hi"]
                           and above["perms"].startswith("---"))
        # sodium_mlock marks it MADV_DONTDUMP ("dd") before it mlocks it
        # ("lo"), which a low RLIMIT_MEMLOCK may refuse.
        m["guarded"] = (not m["name"] and not tids and guard_below
                        and guard_above and "dd" in m["flags"])
        if m["guarded"]:
            m["what"] = "sodium_malloc guarded"
        elif tids:
            m["what"] = "stack of thread " + ",".join(tids)
        elif m["name"].startswith("["):
            m["what"] = m["name"]
        elif m["name"]:
            m["what"] = os.path.basename(m["name"])
        elif below and below["hi"] == m["lo"] and below["name"] and \
                not below["name"].startswith("["):
            m["what"] = "bss of " + os.path.basename(below["name"])
        else:
            m["what"] = "anonymous (malloc arena, mmap'd buffer)"


# The core's notes: the threads' registers, not memory.
REGISTERS = {"what": "thread registers (core note)", "guarded": False,
             "lo": 0, "hi": 0, "perms": "----"}


def mapping_of(maps, addr):
    for m in maps:
        if m["lo"] <= addr < m["hi"]:
            return m
    return None


def nonzero(data):
    """The core without its all-zero pages (most of it: untouched stacks):
    (compact bytes, starts in compact, starts in data) of the runs kept,
    each widened by 64 bytes so that a key at a page's edge is kept whole."""
    runs, start = [], None
    for off in range(0, len(data), PAGE):
        end = min(off + PAGE, len(data))
        if data.count(0, off, end) != end - off:
            if start is None:
                start = max(0, off - 64)
        elif start is not None:
            runs.append((start, min(len(data), off + 64)))
            start = None
    if start is not None:
        runs.append((start, len(data)))
    pieces, cstarts, dstarts, pos = [], [], [], 0
    for lo, hi in runs:
        if dstarts and lo < dstarts[-1] + len(pieces[-1]):
            lo = dstarts[-1] + len(pieces[-1])  # overlapping widening
        pieces.append(data[lo:hi])
        cstarts.append(pos)
        dstarts.append(lo)
        pos += hi - lo
    return b"".join(pieces), cstarts, dstarts


def find_all(compact, cstarts, dstarts, needle):
    """Offsets in the core of every occurrence of needle."""
    pos = compact.find(needle)
    while pos >= 0:
        i = bisect.bisect_right(cstarts, pos) - 1
        run_end = cstarts[i + 1] if i + 1 < len(cstarts) else len(compact)
        if pos + len(needle) <= run_end:  # not across two runs
            yield dstarts[i] + pos - cstarts[i]
        pos = compact.find(needle, pos + 1)


def scan(core, smaps, keyfile, expect_guarded):
    keys = load_keys(keyfile)
    if not keys:
        die("no keys in %s" % keyfile)
    data, loads, notes, threads = read_core(core)
    maps = read_smaps(smaps)
    classify(maps, threads)
    compact, cstarts, dstarts = nonzero(data)
    del data

    def where(off):
        for lo, hi, vaddr in loads:
            if lo <= off < hi:
                addr = vaddr + off - lo
                return addr, mapping_of(maps, addr)
        for lo, hi in notes:
            if lo <= off < hi:
                return None, REGISTERS
        return None, None

    hits = []  # (label, form, core offset, address, mapping)
    for label, text in keys.items():
        raw, text = key_raw(text), text.encode()
        whole = []
        for form, needle in (("text", text), ("raw", raw)):
            for off in find_all(compact, cstarts, dstarts, needle):
                whole.append((off, off + len(needle)))
                hits.append((label, form, off) + where(off))
        parts = [("raw-part", raw[i:i + RAW_FRAGMENT])
                 for i in range(0, 32 - RAW_FRAGMENT + 1, 10)]
        parts += [("text-part", text[i:i + TEXT_FRAGMENT])
                  for i in range(0, 44 - TEXT_FRAGMENT + 1, 14)]
        seen = set()
        for form, needle in parts:
            for off in find_all(compact, cstarts, dstarts, needle):
                if any(lo <= off < hi for lo, hi in whole):
                    continue
                if (form, off // 64) in seen:  # one report per remnant
                    continue
                seen.add((form, off // 64))
                hits.append((label, form, off) + where(off))

    guarded = [h for h in hits if h[4] and h[4]["guarded"]]
    outside = [h for h in hits if not (h[4] and h[4]["guarded"])]
    print("core-scan: %d keys searched, %d threads, %d mappings, "
          "%d KiB not zero" % (len(keys), len(threads), len(maps),
                               len(compact) >> 10))
    for label, form, off, addr, m in sorted(hits, key=lambda h: h[2]):
        print("  %-7s %-28s %-9s core+0x%09x %-16s %s" % (
            "ok" if m and m["guarded"] else "OUTSIDE", label, form, off,
            "0x%x" % addr if addr is not None else "-",
            "%s [%x-%x %s]" % (m["what"], m["lo"], m["hi"], m["perms"])
            if m else "no mapping"))
    print("core-scan: %d copies in guarded memory, %d outside"
          % (len(guarded), len(outside)))
    if outside:
        return 1
    if expect_guarded and not guarded:
        print("core-scan: no key in guarded memory either: the core lacks "
              "the guarded pages, or the scan is blind")
        return 1
    return 0


def main(argv):
    if len(argv) in (4, 6) and argv[1] == "collect":
        if len(argv) == 6 and argv[4] != "--master":
            die(USAGE)
        collect(argv[2], argv[3], argv[5] if len(argv) == 6 else None)
        return 0
    if len(argv) in (5, 6) and argv[1] == "scan":
        if len(argv) == 6 and argv[5] != "--expect-guarded":
            die(USAGE)
        return scan(argv[2], argv[3], argv[4], len(argv) == 6)
    die(USAGE)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
