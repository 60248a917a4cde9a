"""A lean sandbox worker: imports nothing but the standard library.

The Sandbox starts a few of these once (inside fresh network, mount and PID namespaces when it can) and
sends them jobs over a pipe. For every program the worker forks a child that sets its own process group,
resource limits and an unprivileged user, runs the program and its tests, and streams one record per test
over a private pipe. The worker alone decides the verdict from those records and the child's exit, so a
program that exits early, or kills itself, cannot look like a pass.

Verdicts a program cannot forge (docs/sandbox.md): each record carries an HMAC under a key made for that run,
held in the child only inside an OpenSSL context; an audit hook (PEP 578), installed before the program runs,
refuses frame, garbage-collector, ctypes, tracing and /proc/self memory access, so the program can reach
neither that context nor the code that uses it; and the tests' comparisons run on plain data (exact builtin
values, read from the builtin storage of any subclass), so a value cannot vouch for itself with ``__eq__``.

Run as ``python -I -S _worker.py CONFIG_JSON``; it speaks length-prefixed JSON on its stdin and stdout.
``-S`` skips the ``.pth`` start-up hooks of site-packages (they made every fork ~40% slower); the
site-packages folders themselves are put on ``sys.path`` so programs can still import numpy and the like.
"""

from __future__ import annotations

import _thread
import ast
import ctypes
import gc
import hmac
import io
import json
import linecache
import operator
import os
import re
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback
import types
from collections import OrderedDict

# This module's functions look builtins up in a private copy, so a program that replaces builtins.len or
# builtins.type (at any time, even from inside a test) changes nothing the harness computes.
__builtins__ = dict(__import__("builtins").__dict__)

# Modules a solution commonly imports, loaded once here so that every forked child already has them.
# Few on purpose: every page the worker maps makes each fork slower.
_PRELOAD = "bisect collections copy functools heapq itertools math operator re string".split()

RESULT_FD = 255  # the child's private channel for per-test records; out of the way of the program's fds
CLEAN_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_MOUNT_FLAG_BY_OPTION = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                         "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
                         "strictatime": MS_STRICTATIME}


# ----------------------------------------------------------------------------------------------------
# Namespace set-up: everything read-only, a private tmpfs for job directories.
# ----------------------------------------------------------------------------------------------------

def _libc_mount(source, target, fstype, flags, data=None):
    libc = ctypes.CDLL(None, use_errno=True)
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mounts():
    """(mount point, per-mount options) from /proc/self/mountinfo, with octal escapes decoded."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode()
            out.append((point, fields[5].split(",")))
    return out


def _expose_hidden_paths(paths, scratch):
    """Keep the interpreter readable for the unprivileged job user.

    When an ancestor of the interpreter's prefix is private (``/root`` is mode 700 on many machines), a
    tmpfs replaces that ancestor inside this mount namespace and only the needed subtrees are bound back.
    Everything else under the private ancestor stays hidden, which also hides home-directory secrets.
    """
    hidden = {}
    for path in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        parts = path.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                hidden.setdefault(ancestor, set()).add(path)
                break
    for ancestor, keep in hidden.items():
        if any(a != ancestor and ancestor.startswith(a + os.sep) for a in hidden):
            continue
        keep = {p for p in keep if not any(q != p and p.startswith(q + os.sep) for q in keep)}
        fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
        _libc_mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for p, fd in fds.items():
            os.makedirs(p, mode=0o755, exist_ok=True)
            _libc_mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)


def setup_namespace(scratch, tmpfs_mb):
    """Make every mount read-only, then mount a private tmpfs at ``scratch``. Returns mounts left writable."""
    _libc_mount(None, "/", None, MS_REC | MS_PRIVATE)
    needed = {sys.prefix, sys.base_prefix, sys.exec_prefix} | {p for p in sys.path if p}
    _expose_hidden_paths(needed, scratch)
    for point, options in _mounts():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options:
            flags |= _MOUNT_FLAG_BY_OPTION.get(opt, 0)
        try:
            _libc_mount(None, point, None, flags)
        except OSError:
            pass  # reported below if it stayed writable
    _libc_mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=755")
    visible = dict(_mounts())  # a later line for the same point is the mount stacked on top
    return [p for p, opts in visible.items() if "rw" in opts and p != scratch and not p.startswith("/proc")]


# ----------------------------------------------------------------------------------------------------
# Verdicts a program cannot forge (docs/sandbox.md). Everything below runs in the child after model code
# may have run, so it calls no function the program could replace: the worker's builtins are a private copy
# (see the top of this file), and the few library functions it needs are bound here, before any fork.
# ----------------------------------------------------------------------------------------------------

try:
    from _hashlib import hmac_new as _hmac_new
except ImportError:  # a Python built without OpenSSL: the pure-Python HMAC keeps only derived hash states
    _hmac_new = None
_json_str = json.encoder.encode_basestring_ascii  # the C encoder, bound before any program can replace it
_get_ident = _thread.get_ident
_getframe = sys._getframe
_addaudithook = sys.addaudithook
_traceback_of = BaseException.__dict__["__traceback__"].__get__  # the real one, whatever a subclass defines
_type_flags = type.__dict__["__flags__"].__get__
_type_module = type.__dict__["__module__"].__get__
_type_dict = type.__dict__["__dict__"].__get__
_type_mro = type.__dict__["__mro__"].__get__
_type_qualname = type.__dict__["__qualname__"].__get__
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made at run time (by Python code); static types are C's


def _type_name(t):
    name = _type_qualname(t)
    return name if type(name) is str else "?"


def _new_mac():
    """A fresh HMAC-SHA256 context under a random key. The key object is dropped at once: the context is
    all that signs or checks records, and it exposes no key to Python code."""
    if _hmac_new is not None:
        return _hmac_new(os.urandom(32), digestmod="sha256")
    return hmac.new(os.urandom(32), digestmod="sha256")


def _encode_record(record):
    """JSON for a flat record of str/int/bool values, built without the ``json`` module's Python code."""
    parts = []
    for key, value in record.items():
        if value is True or value is False or value is None:
            text = "true" if value is True else "false" if value is False else "null"
        elif type(value) is int:
            text = int.__repr__(value)
        elif type(value) is str:
            text = _json_str(value)
        elif issubclass(type(value), str):
            text = _json_str(str.__str__(value))
        else:
            text = '"?"'
        parts.append(_json_str(key) + ":" + text)
    return "{" + ",".join(parts) + "}"


def _make_reporter(mac, write, fd):
    """``report(record)``: one line ``<seq> <hmac(seq payload)> <payload>`` on the record channel."""
    seq = [0]

    def report(record):
        payload = _encode_record(record)
        n = seq[0]
        seq[0] = n + 1
        body = f"{n} {payload}"
        m = mac.copy()
        m.update(str.encode(body))
        view = memoryview(str.encode(f"{n} {m.hexdigest()} {payload}\n"))
        while len(view):
            view = view[write(fd, view):]

    return report


def verify_records(data, mac):
    """The records whose tags check out, in order, and whether anything else was written to the channel."""
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: nothing, or a record cut short when the child was killed
    records = []
    for expected, line in enumerate(lines):
        seq, _, rest = line.partition(b" ")
        tag, _, payload = rest.partition(b" ")
        m = mac.copy()
        m.update(seq + b" " + payload)
        if seq != str(expected).encode() or not hmac.compare_digest(m.hexdigest().encode(), tag):
            return records, True
        try:
            records.append(json.loads(payload))
        except ValueError:
            return records, True
    return records, False


# --- the audit hook ---------------------------------------------------------------------------------

_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_ALWAYS_BLOCKED = {
    "sys._current_frames": "read other threads' frames (sys._current_frames)",
    "sys.settrace": "install a tracer (sys.settrace)",
    "sys.setprofile": "install a profiler (sys.setprofile)",
    "sys.addaudithook": "install an audit hook (sys.addaudithook)",
    "gc.get_objects": "list the garbage collector's objects (gc.get_objects)",
    "gc.get_referrers": "walk the garbage collector's references (gc.get_referrers)",
    "gc.get_referents": "walk the garbage collector's references (gc.get_referents)",
}
_WATCHED = frozenset({"sys._getframe", "object.__getattr__", "open", "import", "os.chdir", "selfdebug.signal",
                      "selfdebug.create_builtin", *_ALWAYS_BLOCKED})
_PROC_PRIVATE = frozenset({"mem", "fd", "map_files", "pagemap", "fdinfo"})


def _normalise(path, cwd):
    """An absolute, '..'-free form of ``path`` using only str methods (no os.path code a program can patch)."""
    if not str.startswith(path, "/"):
        path = cwd + "/" + path
    parts = []
    for part in str.split(path, "/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part and part != ".":
            parts.append(part)
    return parts


def _private_path(parts):
    """Whether a path reaches this process's memory or file descriptors (or another's)."""
    if len(parts) >= 2 and parts[0] == "dev" and parts[1] in ("fd", "mem", "kmem", "port"):
        return True
    if len(parts) >= 3 and parts[0] == "proc" and (parts[1] in ("self", "thread-self") or str.isdigit(parts[1])):
        rest = parts[2:]
        if rest[0] == "task" and len(rest) >= 3:
            rest = rest[2:]
        return rest[0] in _PROC_PRIVATE
    return False


def _make_guard(on_blocked, job_dir, channel_fd, originals):
    """The audit hook, and the set of thread ids for which it stands aside (the harness's own work).

    Denied: every way to a frame object (so to the harness's frames and their locals), the collector's
    object lists, ctypes (raw memory), tracers and profilers, new audit hooks, and opening this process's
    memory or descriptors. ``on_blocked(what)`` marks the run; sys._getframe and frame attributes mark it
    only when called from exec'd code (``<solution>``, ...), because the standard library tries
    ``sys._getframe`` on its own (namedtuple, enum, typing, logging) and copes with the ValueError.
    """
    inside = set()
    cwd = [job_dir]
    original_signal, original_create_builtin = originals

    def called_from_program():
        tid = _get_ident()
        inside.add(tid)
        try:
            name = _getframe(3).f_code.co_filename  # 0 here, 1 deny, 2 the hook, 3 the caller
            return type(name) is str and str.startswith(name, "<")
        except ValueError:
            return False
        finally:
            inside.discard(tid)

    def deny(what, error, always):
        if always or called_from_program():
            on_blocked(what)
        raise error

    def hook(event, args):
        if event not in _WATCHED and not str.startswith(event, "ctypes."):
            return
        if _get_ident() in inside:
            return
        if event == "open":
            path = args[0]
            if type(path) is int:
                if path == channel_fd:
                    deny("open the judge's record channel", PermissionError(13, "Permission denied"), True)
                return
            if type(path) is bytes:
                path = bytes.decode(path, "utf-8", "surrogateescape")
            elif type(path) is not str:
                return  # path-like objects: the kernel's own checks apply (docs/sandbox.md)
            if _private_path(_normalise(path, cwd[0])):
                deny(f"open {path}", PermissionError(13, "Permission denied", path), True)
        elif event == "object.__getattr__":
            if args[1] in _FRAME_ATTRS:
                deny(f"read a frame ({args[1]})", AttributeError(f"{args[1]} is not available in the sandbox"),
                     False)
        elif event == "sys._getframe":
            deny("walk the interpreter's frames (sys._getframe)", ValueError("call stack is not deep enough"),
                 False)
        elif event == "os.chdir":
            if type(args[0]) is str:
                cwd[0] = "/" + "/".join(_normalise(args[0], cwd[0]))
        elif event == "import":
            if args[0] == "_signal":
                deny("reload the _signal module", PermissionError(13, "Permission denied"), True)
        elif event == "selfdebug.signal":
            signum, handler = args
            if type(signum) is not int:
                raise TypeError("signal number must be an int")
            if issubclass(type(handler), int):
                handler = int.__int__(handler)  # SIG_DFL / SIG_IGN
            elif callable(handler):
                user = handler
                handler = lambda s, frame: user(s, None)  # noqa: E731 - a handler gets no frame here
            else:
                raise TypeError("signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object")
            inside.add(_get_ident())
            try:
                original_signal(signum, handler)
            finally:
                inside.discard(_get_ident())
        elif event == "selfdebug.create_builtin":
            spec, box = args
            name = spec.name
            if type(name) is not str or type(box) is not list:
                raise TypeError("create_builtin() needs a module spec")
            if name == "_signal":
                deny("re-create the _signal module", PermissionError(13, "Permission denied"), True)
            list.append(box, original_create_builtin(types.SimpleNamespace(name=name)))
        elif event in _ALWAYS_BLOCKED:
            deny(_ALWAYS_BLOCKED[event], PermissionError(13, "Permission denied"), True)
        else:  # ctypes.*: raw memory and foreign calls
            deny(f"use ctypes ({event})", PermissionError(13, "Permission denied"), True)

    return hook, inside


_SIGNAL_CODE = compile("def signal(signalnum, handler):\n    audit('selfdebug.signal', int(signalnum), handler)\n",
                       "<sandbox>", "exec")
_CREATE_BUILTIN_CODE = compile("def create_builtin(spec):\n    box = []\n"
                               "    audit('selfdebug.create_builtin', spec, box)\n    return box[0]\n",
                               "<sandbox>", "exec")


def _disarm_signal_frames():
    """Signal handlers are handed the running frame; route installation through the audit hook, which
    wraps Python handlers so that they get None instead. Returns the originals of ``_signal.signal`` and
    ``_imp.create_builtin``, for the hook alone to hold."""
    import _signal

    original = _signal.signal
    # Its own small globals: a program can reach this function (it is signal.signal), and through a
    # function's __globals__ it would otherwise reach this module.
    scope = {"__builtins__": {"int": int}, "audit": sys.audit}
    exec(_SIGNAL_CODE, scope)
    _signal.signal = signal.signal = scope["signal"]
    # A fresh _signal module (from _imp.create_builtin) would bring the original signal() back: that too
    # goes through the hook, which refuses _signal.
    import _imp

    originals = (original, _imp.create_builtin)
    scope = {"__builtins__": {}, "audit": sys.audit}
    exec(_CREATE_BUILTIN_CODE, scope)
    _imp.create_builtin = scope["create_builtin"]
    return originals


def _frames_of(exc):
    """(filename, lineno, name, positions) of the exec'd frames of ``exc``'s traceback. Call only with the
    guard standing aside for this thread: it reads frames, and it runs no code a program could supply."""
    out = []
    tb = _traceback_of(exc)
    while type(tb) is types.TracebackType:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if type(filename) is str and str.startswith(filename, "<"):
            positions = None
            lasti = tb.tb_lasti
            if lasti >= 0:
                for i, p in enumerate(code.co_positions()):
                    if i == lasti // 2:
                        positions = p
                        break
            name = code.co_name
            out.append((filename, tb.tb_lineno, name if type(name) is str else "?", positions))
        tb = tb.tb_next
    return out


# --- comparisons on plain data ------------------------------------------------------------------------

_ATOMS = frozenset({int, bool, float, complex, str, bytes, type(None), type(Ellipsis)})
_KEEP = frozenset({type(re.compile("")), type(re.match("", "")), range, type})
_STATIC_VALUE_MODULES = frozenset({"datetime", "decimal"})
# Methods through which a value could answer a test for itself; a program class defining one, whose value a
# test compares, marks the run blocked.
_OBSERVERS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__", "__class__",
              "__getattribute__", "__getattr__", "__contains__", "__iter__", "__abs__", "__add__", "__radd__",
              "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__", "__index__", "__int__",
              "__float__", "__round__")


def _in(a, b):
    return a in b


def _not_in(a, b):
    return a not in b


_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
        ast.In: _in, ast.NotIn: _not_in}
_CMP_FUNCS = tuple(_CMP.values())
_CMP_INDEX = {op: i for i, op in enumerate(_CMP)}
_IDENTITY = frozenset({_CMP_INDEX[ast.Is], _CMP_INDEX[ast.IsNot]})
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
        ast.BitXor: operator.xor, ast.BitAnd: operator.and_, ast.MatMult: operator.matmul}
_BIN_FUNCS = tuple(_BIN.values())
_BIN_INDEX = {op: i for i, op in enumerate(_BIN)}
_DEQUE = __import__("collections").deque


class Unjudgeable(BaseException):
    """A test compared something that is not plain data. A BaseException, so ``except Exception`` in a
    test cannot swallow it (and the harness notes it anyway)."""


def _storage(value, t):
    """A builtin subclass's value read from the builtin's own storage (no method of the subclass runs)."""
    if issubclass(t, int):
        return int.__int__(value)
    if issubclass(t, float):
        return float.__float__(value)
    if issubclass(t, str):
        return str.__str__(value)
    if issubclass(t, bytes):
        return bytes.__bytes__(value)
    if issubclass(t, complex):
        return complex(complex.real.__get__(value), complex.imag.__get__(value))
    if issubclass(t, list):
        return list(list.__iter__(value))
    if issubclass(t, tuple):
        return tuple(tuple.__iter__(value))
    if issubclass(t, dict):
        return dict(dict.items(value))
    if issubclass(t, frozenset):
        return frozenset(frozenset.__iter__(value))
    if issubclass(t, set):
        return set(set.__iter__(value))
    return None


def _make_judges(on_blocked, failures):
    """The helpers that rewritten tests call (see :class:`PlainDataTests`) and the ``__build_class__`` that
    records the classes test code defines (their methods are the tests' own, so their instances may be
    compared). ``failures`` collects every refusal, so a test that catches one still fails."""
    trusted = {}
    real_build_class = __build_class__

    def build_class(func, name, *bases, **kwargs):
        cls = real_build_class(func, name, *bases, **kwargs)
        trusted[id(cls)] = cls
        return cls

    def program_defines(t, names):
        """Whether a class the program (not the tests, not the standard library) made defines one of ``names``."""
        for cls in _type_mro(t):
            if not _type_flags(cls) & _HEAPTYPE or trusted.get(id(cls)) is cls:
                continue
            module = _type_module(cls)
            if type(module) is str and module in _STDLIB_CLASS_MODULES:
                continue
            namespace = _type_dict(cls)
            for name in names:
                if name in namespace:
                    return name
        return None

    def plain(value, seen, depth):
        t = type(value)
        if t in _ATOMS:
            return value
        if depth > 100:
            raise Unjudgeable("a value nested more than 100 levels deep")
        depth += 1
        if t is list:
            return [plain(v, seen, depth) for v in value]
        if t is tuple:
            return tuple([plain(v, seen, depth) for v in value])
        if t is dict:
            return {plain(k, seen, depth): plain(v, seen, depth) for k, v in value.items()}
        if t is set or t is frozenset:
            return t([plain(v, seen, depth) for v in value])
        if t in _KEEP or trusted.get(id(t)) is t:
            return value
        if t is _DEQUE:
            return _DEQUE([plain(v, seen, depth) for v in _DEQUE.__iter__(value)], _DEQUE.maxlen.__get__(value))
        if not _type_flags(t) & _HEAPTYPE:
            module = _type_module(t)
            if module == "numpy":  # numpy's scalars: C types, converted by their own item()
                try:
                    return plain(t.item(value), seen, depth)
                except (TypeError, ValueError):
                    pass
            elif module in _STATIC_VALUE_MODULES:
                return value
        base = _storage(value, t)
        if base is not None:
            name = program_defines(t, _OBSERVERS)
            if name is not None:
                seen.append(f"{_type_name(t)}.{name}")
            return plain(base, seen, depth)
        name = program_defines(t, _OBSERVERS)
        if name is not None:
            what = f"be compared through its own {name} (an object of class {_type_name(t)})"
            on_blocked(what)
            raise Unjudgeable(f"The program's value is a {_type_name(t)} that defines {name}; tests compare "
                              "plain data only, so the judge does not ask an object whether it is right.")
        raise Unjudgeable(f"The program's value is a {_type_name(t)}, which the judge cannot "
                          "compare: tests compare plain data (numbers, strings, lists, tuples, dicts, sets).")

    def value_of(value, seen):
        try:
            return plain(value, seen, 0)
        except Unjudgeable as exc:
            failures.append(str(exc))
            raise
        except RecursionError:
            failures.append("a value too deeply nested to compare")
            raise Unjudgeable("a value too deeply nested to compare") from None

    def suspect(seen):
        if seen:
            on_blocked(f"be compared through its own {seen[0]}")

    def compare(ops, *operands):
        seen = []
        values = [None] * len(operands)
        needed = [False] * len(operands)
        for i, op in enumerate(ops):
            if op not in _IDENTITY:
                needed[i] = needed[i + 1] = True
        for i, v in enumerate(operands):
            values[i] = value_of(v, seen) if needed[i] else v
        result = True
        for i, op in enumerate(ops):
            result = _CMP_FUNCS[op](values[i], values[i + 1])
            if not result:
                suspect(seen)
                return result
        return result

    def truth(value):
        seen = []
        result = bool(value_of(value, seen))
        if not result:
            suspect(seen)
        return result

    def arith(op, left, right):
        seen = []
        return _BIN_FUNCS[op](value_of(left, seen), value_of(right, seen))

    return {"__sd_cmp__": compare, "__sd_truth__": truth, "__sd_arith__": arith}, build_class


_STDLIB_CLASS_MODULES = frozenset({"collections", "enum", "typing", "fractions", "decimal", "numbers", "datetime",
                                   "abc", "_collections_abc", "builtins", "re", "json", "array", "dataclasses"})


class PlainDataTests(ast.NodeTransformer):
    """Rewrites test code so that every ``assert`` decides on plain data.

    Inside an assert, each comparison ``a == b`` (any operator but ``is``) becomes ``__sd_cmp__(ops, a, b)``,
    each arithmetic operation ``a - b`` becomes ``__sd_arith__(op, a, b)``, and the asserted value becomes
    ``__sd_truth__(value)`` (``and``/``or``/``not`` keep their meaning, applied to judged operands). The
    helpers convert operands to builtin values before the builtin operator runs. A chained comparison
    evaluates all its operands before comparing (the tests in the benchmarks never rely on the difference).
    """

    def visit_Assert(self, node):
        test = _InAssert().visit(node.test)
        node.test = self._truth(test)
        return node

    def _truth(self, node):
        if isinstance(node, ast.BoolOp):
            node.values = [self._truth(v) for v in node.values]
            return node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = self._truth(node.operand)
            return node
        if getattr(node, "_sd_judged", False):
            return node
        return _located(ast.Call(_located(ast.Name("__sd_truth__", ast.Load()), node), [node], []), node)


class _InAssert(ast.NodeTransformer):
    def visit_Compare(self, node):
        self.generic_visit(node)
        if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops):
            node._sd_judged = True  # identity needs no conversion, and yields a bool
            return node
        ops = _located(ast.Tuple([_located(ast.Constant(_CMP_INDEX[type(op)]), node) for op in node.ops],
                                 ast.Load()), node)
        call = _located(ast.Call(_located(ast.Name("__sd_cmp__", ast.Load()), node),
                                 [ops, node.left, *node.comparators], []), node)
        call._sd_judged = True
        return call

    def visit_BinOp(self, node):
        self.generic_visit(node)
        op = _located(ast.Constant(_BIN_INDEX[type(node.op)]), node)
        return _located(ast.Call(_located(ast.Name("__sd_arith__", ast.Load()), node), [op, node.left, node.right],
                                 []), node)


def _located(new, old):
    """``new`` placed where ``old`` was, so tracebacks point at the test's own text."""
    new.lineno, new.col_offset = old.lineno, old.col_offset
    new.end_lineno, new.end_col_offset = old.end_lineno, old.end_col_offset
    return new


def compile_test_code(source, filename):
    """Test code compiled with its asserts judged on plain data (see :class:`PlainDataTests`)."""
    if "assert" not in source:  # most set-up code: nothing to rewrite
        return compile(source, filename, "exec", dont_inherit=True)
    tree = ast.parse(source, filename, "exec")
    rewrite = PlainDataTests()
    for node in _asserts(tree.body):
        rewrite.visit_Assert(node)
    return compile(tree, filename, "exec", dont_inherit=True)


def _asserts(statements):
    """The assert statements among ``statements`` and the statements nested in them (expressions hold none)."""
    for st in statements:
        if isinstance(st, ast.Assert):
            yield st
            continue
        for field in ("body", "orelse", "finalbody"):
            inner = getattr(st, field, None)
            if isinstance(inner, list):
                yield from _asserts(inner)
        for part in (*getattr(st, "handlers", ()), *getattr(st, "cases", ())):
            yield from _asserts(part.body)


# ----------------------------------------------------------------------------------------------------
# Inside the forked child: run the program and its tests, report each test on RESULT_FD.
# ----------------------------------------------------------------------------------------------------

def _set_limits(limits):
    mem = int(limits["memory_mb"]) << 20
    cpu = int(limits["timeout"]) + 1
    for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                       (resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20),
                       (resource.RLIMIT_NPROC, int(limits["max_processes"])),
                       (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def _register_source(filename, source):
    # Tracebacks of exec'd strings show no lines unless linecache knows the text. Only the program's own
    # text goes there: linecache is readable by the program, and test text would give away the answers.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _value_text(node, namespace):
    text = repr(eval(compile(ast.Expression(node), "<test>", "eval"), namespace))
    return text if len(text) <= 300 else text[:300] + "..."


def _actual_value_note(test_source, namespace):
    """For ``assert call(...) == expected``, what the call returned, so the model sees the actual output; and
    the expected value too when the test computes it rather than spelling it out."""
    note = ""
    try:
        node = ast.parse(test_source).body[-1]
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
            left, right = node.test.left, node.test.comparators[0]
            if isinstance(left, ast.Call):
                note = "\nActual output: " + _value_text(left, namespace)
                try:
                    ast.literal_eval(right)
                except ValueError:
                    note += "\nExpected output: " + _value_text(right, namespace)
    except BaseException:  # noqa: BLE001 - the note is best effort; the verdict is already decided
        pass
    return note


def _child_harness(job, compiled, mac, job_dir, write, exit_now):
    """Runs in the forked child. ``write``/``exit_now`` and the HMAC context ``mac`` were bound before any
    program code runs; the audit hook goes in before the program does. The context lives only in the
    harness's frames and the reporter's closure, which the hook keeps the program from reaching."""
    import builtins

    report = _make_reporter(mac, write, RESULT_FD)
    blocked = []

    def on_blocked(what):
        if not blocked:
            blocked.append(what)
            report({"event": "blocked", "feedback": f"The program tried to {what}; the sandbox does not allow "
                                                    "it, so the program failed."})

    program = job["program"]
    stdio = job["kind"] == "stdio"
    sources = {"<solution>": program.splitlines(True)}
    _register_source("<solution>", program)
    try:
        code = compile(program, "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:
        report({"event": "syntax_error", "feedback": "".join(traceback.format_exception_only(type(exc), exc)).rstrip()})
        exit_now(0)
    saved_builtins = dict(builtins.__dict__)
    # `import __main__` would hand the program this module; it gets an empty one (its own, for stdio).
    main_module = types.ModuleType("__main__")
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__ if stdio else {"__name__": "__solution__"}
    namespace["__builtins__"] = builtins
    hook, inside = _make_guard(on_blocked, job_dir, RESULT_FD, _disarm_signal_frames())
    _addaudithook(hook)

    def format_exception(exc, max_frames=5):
        tid = _get_ident()
        inside.add(tid)  # the guard stands aside while we read the traceback's frames
        try:
            frames = _frames_of(exc)
        finally:
            inside.discard(tid)
        summaries = []
        for filename, lineno, name, pos in frames[-max_frames:]:
            lines = sources.get(filename)
            line = lines[lineno - 1] if lines and lineno and 0 < lineno <= len(lines) else ""
            summaries.append(traceback.FrameSummary(
                filename, lineno, name, lookup_line=False, line=line, end_lineno=pos[1] if pos else None,
                colno=pos[2] if pos else None, end_colno=pos[3] if pos else None))
        out = ["Traceback (most recent call last):", *traceback.StackSummary.from_list(summaries).format(),
               "".join(traceback.format_exception_only(type(exc), exc)).rstrip()]
        return "".join(x if x.endswith("\n") else x + "\n" for x in out).rstrip()

    try:
        exec(code, namespace)
    except SystemExit as exc:
        if not stdio:
            report({"event": "program_error", "error": "SystemExit",
                    "feedback": f"The program called exit ({exc.code!r}) before the tests ran."})
            exit_now(0)
    except BaseException as exc:  # noqa: BLE001 - any failure of model code is a verdict, not a crash
        report({"event": "program_error", "error": type(exc).__name__, "feedback": format_exception(exc)})
        exit_now(0)
    if stdio:
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001
            pass
        report({"event": "done"})
        exit_now(0)

    # Undo whatever the program did to the builtins its own code will use during the tests.
    for key in [k for k in builtins.__dict__ if k not in saved_builtins]:
        del builtins.__dict__[key]
    builtins.__dict__.update(saved_builtins)
    namespace["__builtins__"] = builtins
    # The tests run in their own namespace: a copy of the program's names, private builtins, and the judging
    # helpers, none of which the program can reach (its functions keep their own globals).
    failures = []
    judges, build_class = _make_judges(on_blocked, failures)
    test_builtins = dict(saved_builtins)
    test_builtins["__build_class__"] = build_class
    tests_ns = dict(namespace)
    tests_ns.update(judges)
    tests_ns["__builtins__"] = test_builtins
    setup_source, setup_code = compiled["setup"]
    if setup_source:
        sources["<setup>"] = setup_source.splitlines(True)
        try:
            if isinstance(setup_code, BaseException):
                raise setup_code
            exec(setup_code, tests_ns)
        except BaseException as exc:  # noqa: BLE001
            report({"event": "program_error", "error": type(exc).__name__,
                    "feedback": "The test set-up failed:\n" + format_exception(exc)})
            exit_now(0)
    for index, (test, test_code) in enumerate(compiled["asserts"]):
        filename = f"<test {index}>"
        sources[filename] = test.splitlines(True)
        seen = len(failures)
        try:
            if isinstance(test_code, BaseException):
                raise test_code
            exec(test_code, tests_ns)
            if len(failures) > seen:  # the test caught the judge's refusal; it still failed
                raise Unjudgeable(failures[seen])
            report({"event": "test", "index": index, "ok": True})
        except Unjudgeable as exc:
            report({"event": "test", "index": index, "ok": False, "error": "AssertionError",
                    "feedback": f"Failed test: {test.strip()}\n{exc}"})
        except AssertionError:
            report({"event": "test", "index": index, "ok": False, "error": "AssertionError",
                    "feedback": f"Failed test: {test.strip()}" + _actual_value_note(test, tests_ns)})
        except BaseException as exc:  # noqa: BLE001 - SystemExit inside a test is a failed test
            report({"event": "test", "index": index, "ok": False, "error": type(exc).__name__,
                    "feedback": f"Failed test: {test.strip()}\n" + format_exception(exc)})
    report({"event": "done"})
    exit_now(0)


def _enter_child(job, compiled, mac, uid, job_dir, stdin_path, out_w, err_w, res_w):
    """Everything between fork and running model code. Never returns."""
    try:
        os.setsid()
        os.dup2(res_w, RESULT_FD)
        stdin_fd = os.open(stdin_path or os.devnull, os.O_RDONLY)
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, RESULT_FD)
        os.closerange(RESULT_FD + 1, 4096)
        os.chdir(job_dir)
        _set_limits(job["limits"])
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.umask(0o077)
        env = {k: os.environ[k] for k in CLEAN_ENV_KEYS if k in os.environ}
        env.update(HOME=job_dir, TMPDIR=job_dir, PYTHONIOENCODING="utf-8")
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = job_dir
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace",
                                      write_through=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        _child_harness(job, compiled, mac, job_dir, os.write, os._exit)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(70)


# ----------------------------------------------------------------------------------------------------
# In the worker: fork, supervise, kill, decide the verdict.
# ----------------------------------------------------------------------------------------------------

def _set_nonblocking(fd):
    os.set_blocking(fd, False)


class Worker:
    def __init__(self, config):
        self.uid = config.get("uid")
        self.isolated = bool(config.get("isolate"))
        self.scratch = config.get("scratch") or tempfile.gettempdir()
        self.jobs = 0
        self._code = OrderedDict()  # (filename, source) -> rewritten code object, or the compile error
        self._code_chars = 0

    _CODE_CACHE_CHARS = 16 << 20  # test sources kept compiled (the same suites come back run after run)

    def _test_code(self, source, filename):
        key = (filename, source)
        hit = self._code.get(key)
        if hit is not None:
            self._code.move_to_end(key)
            return hit
        try:
            code = compile_test_code(source, filename)
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            code = exc
        if len(source) > self._CODE_CACHE_CHARS // 64:
            return code  # a huge set-up (inlined inputs): kept out, so the worker, and every fork, stays small
        self._code[key] = code
        self._code_chars += len(source)
        while self._code_chars > self._CODE_CACHE_CHARS and len(self._code) > 1:
            (_, old), _ = self._code.popitem(last=False)
            self._code_chars -= len(old)
        return code

    def compile_suite(self, job):
        """The suite's set-up and tests, compiled here once (rewritten to judge on plain data) and
        inherited by every child."""
        setup = job["setup"]
        return {"setup": (setup, self._test_code(setup, "<setup>") if setup else None),
                "asserts": [(t, self._test_code(t, f"<test {i}>")) for i, t in enumerate(job["asserts"])]}

    # One program run: fork, stream its pipes until it exits or the deadline passes.
    def run_child(self, job, stdin_data, compiled=None):
        self.jobs += 1
        job_dir = os.path.join(self.scratch, f"job-{os.getpid()}-{self.jobs}")
        os.mkdir(job_dir, 0o700)
        stdin_path = None
        if stdin_data is not None:
            stdin_path = os.path.join(job_dir, ".stdin")
            with open(stdin_path, "w", encoding="utf-8") as f:
                f.write(stdin_data)
            os.chmod(stdin_path, 0o400)
        if self.uid is not None:
            for p in (job_dir, stdin_path):
                if p:
                    os.chown(p, self.uid, self.uid)
        pipes = [os.pipe() for _ in range(3)]
        limits = job["limits"]
        mac = _new_mac()  # one key per run: records of one run are worthless in any other
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _enter_child(job, compiled, mac, self.uid, job_dir, stdin_path, pipes[0][1], pipes[1][1], pipes[2][1])
        for _, w in pipes:
            os.close(w)
        readers = [r for r, _ in pipes]
        try:
            outcome = self._supervise(pid, readers, start + float(limits["timeout"]), limits)
        finally:
            self._kill_leftovers(pid)
            for r in readers:
                os.close(r)
            shutil.rmtree(job_dir, ignore_errors=True)
        outcome["duration"] = time.monotonic() - start
        outcome["records"], outcome["forged"] = verify_records(outcome["records"], mac)
        return outcome

    def _supervise(self, pid, readers, deadline, limits):
        out_r, err_r, res_r = readers
        caps = {out_r: int(limits["max_output_bytes"]), err_r: int(limits["max_output_bytes"]),
                res_r: 64 << 20}
        bufs = {fd: bytearray() for fd in readers}
        for fd in readers:
            _set_nonblocking(fd)
        pidfd = os.pidfd_open(pid)
        open_fds = set(readers)
        timed_out = overflow = False
        status = None
        try:
            while status is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select(list(open_fds) + [pidfd], [], [], remaining)
                for fd in ready:
                    if fd == pidfd:
                        status = os.waitpid(pid, 0)[1]
                    elif not self._read_into(fd, bufs[fd], caps[fd]):
                        open_fds.discard(fd)
                if any(len(bufs[fd]) >= caps[fd] for fd in (out_r, err_r)):
                    overflow = True
                    break
        finally:
            os.close(pidfd)
        if status is None:
            self._kill_group(pid)
            status = os.waitpid(pid, 0)[1]
        for fd in open_fds:  # whatever the child wrote just before it exited
            self._read_into(fd, bufs[fd], caps[fd])
        return {"status_code": status, "timed_out": timed_out, "overflow": overflow,
                "stdout": bytes(bufs[out_r]), "stderr": bytes(bufs[err_r]), "records": bytes(bufs[res_r])}

    @staticmethod
    def _read_into(fd, buf, cap):
        """Read what is there; False at end of file. Bytes past ``cap`` are dropped."""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            room = cap - len(buf)
            if room > 0:
                buf += chunk[:room]
            if len(chunk) < 1 << 16:
                return True

    @staticmethod
    def _kill_group(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    def _kill_leftovers(self, pid):
        """No process of a job outlives it, even one that left the process group with setsid."""
        self._kill_group(pid)
        if self.isolated:
            # We are PID 1 of our own namespace: any other process here belongs to the job just run.
            for _ in range(100):
                others = [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != os.getpid()]
                if not others:
                    break
                self._kill_all_of_job_user(others)
                self._reap()
        else:
            self._kill_all_of_job_user([])
        self._reap()

    def _kill_all_of_job_user(self, pids):
        if self.uid is None:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            return
        killer = os.fork()
        if killer == 0:
            try:
                os.setuid(self.uid)
                os.kill(-1, signal.SIGKILL)  # every process of the job user at once; forks cannot outrun it
            except BaseException:  # noqa: BLE001
                pass
            os._exit(0)
        os.waitpid(killer, 0)

    @staticmethod
    def _reap():
        # Collect anything re-parented to us (we are PID 1 of our namespace when isolated).
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

    # The verdict for one job.
    def run_job(self, job):
        limits = job["limits"]
        if job["kind"] == "stdio":
            return self._run_stdio(job, limits)
        outcome = self.run_child(job, None, self.compile_suite(job))
        return self._assert_verdict(job, outcome, limits)

    @staticmethod
    def _blocked(outcome):
        """The feedback for a run that tried to forge its verdict, or None."""
        for rec in outcome["records"]:
            if rec.get("event") == "blocked":
                return rec.get("feedback") or "The program tried something the sandbox does not allow."
        if outcome["forged"]:
            return ("The program wrote to the judge's private record channel; only the judge's own records "
                    "count, so the program failed.")
        return None

    @staticmethod
    def _exit_note(code):
        if os.WIFSIGNALED(code):
            sig = os.WTERMSIG(code)
            if sig == signal.SIGXCPU:
                return "timeout", "The program exceeded its CPU time limit."
            return "error", f"The program was killed by signal {signal.Signals(sig).name}."
        return "error", f"The program exited with status {os.WEXITSTATUS(code)} before the tests finished."

    def _assert_verdict(self, job, outcome, limits):
        n_tests = len(job["asserts"])
        results = [False] * n_tests
        feedback, errors, done = "", set(), False
        status = None
        blocked = self._blocked(outcome)
        if blocked is not None:
            return self._result("blocked", results, blocked, outcome, limits)
        for rec in outcome["records"]:
            event = rec.get("event")
            if event == "syntax_error":
                status, feedback = "syntax_error", rec.get("feedback", "")
            elif event == "program_error":
                status, feedback = ("memory" if rec.get("error") == "MemoryError" else "error"), rec.get("feedback", "")
            elif event == "test" and isinstance(rec.get("index"), int) and 0 <= rec["index"] < n_tests:
                results[rec["index"]] = rec.get("ok") is True
                if rec.get("ok") is not True:
                    errors.add(rec.get("error"))
                    feedback = feedback or rec.get("feedback", "")
            elif event == "done":
                done = True
        if status is None:
            if outcome["timed_out"]:
                status = "timeout"
                feedback = feedback or f"Timed out after {limits['timeout']:g} seconds."
            elif outcome["overflow"]:
                status, feedback = "output_limit", f"The program printed more than {limits['max_output_bytes']} bytes."
            elif not done:
                status, note = self._exit_note(outcome["status_code"])
                feedback = feedback or note
            elif all(results):
                status = "passed"
            elif "MemoryError" in errors:
                status = "memory"
            else:
                status = "failed" if errors <= {"AssertionError"} else "error"
        return self._result(status, results, feedback, outcome, limits)

    @staticmethod
    def _result(status, results, feedback, outcome, limits):
        cap = int(limits["max_feedback_chars"])
        if len(feedback) > cap:
            feedback = feedback[:cap] + "\n... (truncated)"
        text = lambda b: b[:cap].decode("utf-8", "replace")  # noqa: E731
        return {"status": status, "n_passed": sum(results), "n_tests": len(results), "feedback": feedback,
                "stdout": text(outcome.get("stdout", b"")), "stderr": text(outcome.get("stderr", b"")),
                "test_results": results, "duration": outcome.get("duration", 0.0)}

    def _run_stdio(self, job, limits):
        results, feedback, status, last = [], "", None, {}
        for test_input, expected in job["stdio"]:
            if status == "timeout":  # one slow case predicts the rest; do not spend a timeout on each
                results.append(False)
                continue
            outcome = self.run_child(job, test_input)
            last = outcome
            blocked = self._blocked(outcome)
            if blocked is not None:
                return self._result("blocked", [False] * len(job["stdio"]), blocked, outcome, limits)
            events = {r.get("event"): r for r in outcome["records"]}
            actual = outcome["stdout"].decode("utf-8", "replace")
            ok = False
            if "syntax_error" in events:
                status, feedback = "syntax_error", events["syntax_error"].get("feedback", "")
                results = [False] * len(job["stdio"])
                break
            if outcome["timed_out"]:
                status = "timeout"
                feedback = feedback or f"Timed out after {limits['timeout']:g} seconds on input:\n{_clip(test_input)}"
            elif outcome["overflow"]:
                status = status or "output_limit"
                feedback = feedback or f"The program printed more than {limits['max_output_bytes']} bytes."
            elif "program_error" in events:
                rec = events["program_error"]
                status = status or ("memory" if rec.get("error") == "MemoryError" else "error")
                feedback = feedback or f"Input:\n{_clip(test_input)}\n{rec.get('feedback', '')}"
            elif "done" not in events:
                kind, note = self._exit_note(outcome["status_code"])
                status = status or kind
                feedback = feedback or note
            else:
                ok = outputs_match(actual, expected)
                if not ok:
                    status = status or "failed"
                    feedback = feedback or (f"Failed test:\nInput:\n{_clip(test_input)}\nExpected output:\n"
                                            f"{_clip(expected)}\nActual output:\n{_clip(actual)}")
            results.append(ok)
        return self._result(status or "passed", results, feedback, last, limits)


def _clip(text, limit=300):
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + "..."


def outputs_match(actual, expected, tol=1e-6):
    """stdout equals the expected output up to trailing whitespace, or token by token with numeric tolerance."""
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
    if norm(actual) == norm(expected):
        return True
    a, e = actual.split(), expected.split()
    if len(a) != len(e):
        return False
    for x, y in zip(a, e):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if abs(fx - fy) > tol * max(1.0, abs(fy)):
            return False
    return True


# ----------------------------------------------------------------------------------------------------
# The request loop.
# ----------------------------------------------------------------------------------------------------

def _read_exact(fd, n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(fd, message):
    payload = json.dumps(message).encode()
    os.write(fd, struct.pack("!I", len(payload)))
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _add_site_packages():
    import site

    for path in site.getsitepackages():
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


def main():
    config = json.loads(sys.argv[1])
    _add_site_packages()
    # Keep the protocol off fds 0 and 1 so no job can read requests or write replies.
    req_fd, resp_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    for module in _PRELOAD:
        try:
            __import__(module)
        except ImportError:
            pass
    writable = []
    if config.get("isolate"):
        try:
            writable = setup_namespace(config["scratch"], int(config.get("tmpfs_mb", 256)))
        except OSError as exc:
            _send(resp_fd, {"ready": False, "error": f"namespace set-up failed: {exc}"})
            return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    gc.collect()
    gc.freeze()  # keeps the collector from touching (and so copying) the worker's pages in every fork
    worker = Worker(config)
    _send(resp_fd, {"ready": True, "pid": os.getpid(), "writable_mounts": writable,
                    "uid": worker.uid, "isolated": worker.isolated})
    while True:
        header = _read_exact(req_fd, 4)
        if header is None:
            return 0
        job = json.loads(_read_exact(req_fd, struct.unpack("!I", header)[0]))
        try:
            reply = worker.run_job(job)
        except Exception as exc:  # noqa: BLE001 - a worker bug must not take the pool down
            reply = {"status": "error", "n_passed": 0, "n_tests": len(job.get("asserts") or job.get("stdio") or ()),
                     "feedback": f"sandbox worker error: {exc!r}", "stdout": "", "stderr": "",
                     "test_results": [], "duration": 0.0}
        _send(resp_fd, reply)


if __name__ == "__main__":
    sys.exit(main())
