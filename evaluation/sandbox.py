"""Run untrusted (model-written) Python programs in a constrained subprocess, for coding benchmarks.

`run_program(source)` runs one program and returns an `ExecutionResult`; `run_programs(sources)` runs many
concurrently (a thread pool, each thread owns one subprocess) and returns a `BatchResult` with the results in order
and the status counts.

Status (`ExecutionResult.status`):

* ``"pass"``    -- the program exited with code 0.
* ``"fail"``    -- an uncaught ``AssertionError``, or an explicit nonzero ``sys.exit(n)`` / ``os._exit(n)`` (n != 3).
* ``"error"``   -- any other uncaught exception (``SyntaxError``, ``NameError``, ``MemoryError``, ...; the bootstrap
  exits with the reserved code 3), death by a signal other than the CPU limit, or output past ``output_kill_bytes``.
* ``"timeout"`` -- the wall-clock limit ``timeout_s`` passed, or the CPU-time limit (``SIGXCPU``) fired.

Note that a program can always ``os._exit(0)`` before its asserts run: exit-code grading trusts the program text.

How each program is run (the *kernel* column is enforced by Linux, the *best effort* column only by Python code that
the program itself can undo, e.g. with ``ctypes``):

Kernel-enforced
  * a fresh ``python -I -B`` (isolated mode: no PYTHON* variables, no user site, no bytecode writes) in a new
    session / process group, in its own temporary working directory that is deleted afterwards;
  * an environment that holds nothing but ``PATH=/usr/bin:/bin`` (no tokens, no HF_*/WANDB_* variables; Python
    itself may add ``LC_CTYPE`` by its C-locale coercion);
  * rlimits set in the child before any program code runs: RLIMIT_AS (``memory_mb``), RLIMIT_CPU
    (``ceil(timeout_s) + 1``), RLIMIT_NPROC (``max_processes``), RLIMIT_FSIZE (``max_file_mb``), RLIMIT_NOFILE
    (``max_open_files``), RLIMIT_CORE = 0 (CPython ignores SIGXFSZ, so a write past RLIMIT_FSIZE raises
    ``OSError: File too large``: status "error");
  * on timeout, and as soon as the main process has exited (after a 0.2 s drain of its pipes), the whole process
    group is SIGKILLed, so background children neither keep the run alive nor outlive it;
  * stdout/stderr are read through pipes; only the last ``max_output_bytes`` of each are kept, and the process is
    killed once it has written ``output_kill_bytes`` in all, so 1 GB of ``print`` neither exhausts memory nor disk;
  * network: the child calls ``unshare(CLONE_NEWNET)`` (as root) or ``unshare(CLONE_NEWUSER | CLONE_NEWNET)``
    (unprivileged user namespaces) before the program runs; the new namespace has only a loopback that is down, so
    every connect, including to 127.0.0.1, fails. ``ExecutionResult.network_isolated`` says whether it worked;
  * when the evaluator runs as root (as on the project's machines) and the interpreter is readable by other users,
    the child drops to a fresh, unused uid/gid (one per run) before the program runs. Then RLIMIT_NPROC counts only
    that run's processes (root is exempt from RLIMIT_NPROC, so without the drop it would not apply), file permissions
    stop writes outside the sandbox except into world-writable directories (``/tmp``, ``/dev/shm``) and stop reading
    root's private files (``/root`` is 0700, tokens under ``~/.cache``), and after the run any process of that uid
    still alive is SIGKILLed (``kill -KILL -1`` run as that uid), which also catches children that left the process
    group with ``setsid()``. ``ExecutionResult.privileges_dropped`` says whether it happened. If ``sys.executable`` is
    not usable by other users (a pyenv under ``/root``), ``/usr/bin/python3`` is used instead when it exists: then
    only its own packages are importable, not the evaluator's venv (pass ``python=`` / ``drop_privileges=False``).

Best effort (in-process, defeatable by the program)
  * an audit hook (``sys.addaudithook``) in the bootstrap refuses to create sockets and refuses opens for writing,
    ``remove``, ``rename``, ``mkdir``, ``chmod``... on paths outside the sandbox directory (``/dev/null`` allowed),
    and ``socket.socket`` is replaced by a stub that raises. Subprocesses the program starts (``os.system``) are not
    covered by the hook, only by the kernel measures above.

Not prevented, even as root: writing into world-writable directories by a subprocess, filling ``/tmp`` with many
files each under ``max_file_mb``, reading world-readable files, using CPU up to the limits. When *not* root and
user namespaces are unavailable, there is no network barrier (the hook only), RLIMIT_NPROC counts every process of the
evaluator's user (it is set to that user's current task count plus ``max_processes``), and a child that calls
``setsid()`` escapes the group kill. This is not a security boundary against a determined attacker (no seccomp, no
chroot, no container); it is meant to keep buggy or reward-hacking model output from harming the evaluator.
"""

from __future__ import annotations

import itertools
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


STATUSES = ("pass", "fail", "timeout", "error")
ERROR_EXIT_CODE = 3  # reserved by the bootstrap for "uncaught exception other than AssertionError"
_MINIMAL_PATH = "/usr/bin:/bin"
_UID_BASE = 1_500_000_000
_uid_counter = itertools.count()
_uid_lock = threading.Lock()


@dataclass(frozen=True)
class ExecutionResult:
    status: str  # one of STATUSES
    returncode: int | None  # negative: killed by that signal; None: never started
    wall_time_s: float
    stdout: str  # the last max_output_bytes (decoded with errors="replace")
    stderr: str
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    detail: str = ""  # short reason: exception line, "wall-clock timeout", "output limit exceeded", ...
    network_isolated: bool = False  # a new network namespace was entered
    privileges_dropped: bool = False  # ran under a fresh unprivileged uid

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass(frozen=True)
class BatchResult:
    results: tuple[ExecutionResult, ...]
    counts: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def pass_rate(self) -> float:
        return self.counts.get("pass", 0) / len(self.results) if self.results else 0.0


# The bootstrap runs as `python -I -B -c BOOTSTRAP key=value...`, still with the parent's uid, in the sandbox dir.
# Everything before `exec(code, ...)` is trusted; after it the program may undo anything not enforced by the kernel.
_BOOTSTRAP = r"""
import os, resource, sys
cfg = dict(item.split("=", 1) for item in sys.argv[1:])
cfg["rlimits"] = {k: int(v) for k, v in cfg.items() if k.startswith("RLIMIT_")}
cfg["uid"] = None if cfg["uid"] == "-" else int(cfg["uid"])
cfg["status_fd"] = int(cfg["status_fd"])
cfg["net"], cfg["require_net"] = cfg["net"] == "1", cfg["require_net"] == "1"
net = False
if cfg["net"]:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
    if os.geteuid() == 0:
        net = libc.unshare(CLONE_NEWNET) == 0
    else:
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            try:
                maps = (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1"))
                for name, text in maps:
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
                net = True
            except OSError:
                net = False
    if cfg["require_net"] and not net:
        sys.stderr.write("sandbox: could not enter a new network namespace\n")
        os._exit(3)
for name, value in cfg["rlimits"].items():
    lim = getattr(resource, name)
    hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU at the soft limit, SIGKILL a second later
    try:
        resource.setrlimit(lim, (value, hard))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(lim)
        resource.setrlimit(lim, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard))
if cfg["uid"] is not None:
    os.setgroups([])
    os.setgid(cfg["uid"])
    os.setuid(cfg["uid"])
os.write(cfg["status_fd"], b"1" if net else b"0")
os.close(cfg["status_fd"])
root = os.path.realpath(os.getcwd())
with open(cfg["program"], "rb") as f:
    source = f.read()
import builtins
def _deny(*a, **k):
    raise PermissionError("sandbox: network access is disabled")
import socket as _socket_mod
class _NoSocket:
    def __init__(self, *a, **k):
        _deny()
_socket_mod.socket = _NoSocket
_socket_mod.create_connection = _deny
_socket_mod.socketpair = _deny
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_realpath, _sep = os.path.realpath, os.sep
_busy = []
def _inside(path):
    if isinstance(path, int):
        return True
    try:
        p = _realpath(os.fsdecode(path))
    except Exception:
        return False
    return p == root or p.startswith(root + _sep) or p == "/dev/null"
def _hook(event, args):
    if _busy:
        return
    _busy.append(1)
    try:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
            if writing and path is not None and not _inside(path):
                raise PermissionError(f"sandbox: writing outside the sandbox directory is not allowed: {path!r}")
        elif event.startswith("socket.") and event != "socket.getaddrinfo":
            raise PermissionError("sandbox: network access is disabled")
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
                       "shutil.rmtree", "shutil.chown", "os.chflags", "os.setxattr", "os.removexattr"):
            if args and not _inside(args[0]):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory is not allowed")
        elif event in ("os.rename", "os.link", "os.symlink", "shutil.move", "shutil.copyfile", "shutil.copytree"):
            moving = event in ("os.rename", "shutil.move")
            if len(args) > 1 and (not _inside(args[1]) or moving and not _inside(args[0])):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory is not allowed")
    finally:
        _busy.pop()
sys.addaudithook(_hook)
sys.argv = [cfg["program"]]
sys.path[0] = root
main = {"__name__": "__main__", "__file__": cfg["program"], "__builtins__": builtins}
try:
    exec(compile(source, cfg["program"], "exec"), main)
except SystemExit:
    raise
except BaseException as exc:
    code = 1 if isinstance(exc, AssertionError) else 3
    try:
        import traceback
        traceback.print_exc()
        sys.stderr.flush()
    except BaseException:  # e.g. MemoryError again while formatting: at least name the exception
        try:
            os.write(2, f"{type(exc).__name__}\n".encode())
        except BaseException:
            pass
    os._exit(code)
"""


def _world_executable(path: str) -> bool:
    """True when a user other than the owner can run `path` (every parent directory o+x, the file o+rx)."""
    path = os.path.realpath(path)
    try:
        if os.stat(path).st_mode & 0o005 != 0o005:
            return False
        parent = os.path.dirname(path)
        while True:
            if os.stat(parent).st_mode & 0o001 == 0:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _choose_interpreter(python: str | None, drop_privileges: bool | None) -> tuple[str, bool]:
    """(interpreter, drop) -- drop privileges only as root and only with an interpreter the dropped uid can run."""
    is_root = os.geteuid() == 0
    want_drop = is_root if drop_privileges is None else drop_privileges
    if want_drop and not is_root:
        raise ValueError("drop_privileges=True needs the evaluator to run as root")
    if python is not None:
        if want_drop and not _world_executable(python):
            if drop_privileges:
                raise ValueError(f"{python} is not executable by an unprivileged uid; cannot drop privileges")
            return python, False
        return python, want_drop
    if not want_drop:
        return sys.executable, False
    for candidate in (sys.executable, "/usr/bin/python3"):
        if candidate and os.path.exists(candidate) and _world_executable(candidate):
            return candidate, True
    if drop_privileges:
        raise ValueError("no interpreter executable by an unprivileged uid; pass python=...")
    return sys.executable, False


def _fresh_uid() -> int:
    with _uid_lock:
        n = next(_uid_counter)
    return _UID_BASE + (os.getpid() % 20_000) * 10_000 + n % 10_000


def _user_task_count(uid: int) -> int:
    """Tasks (threads count against RLIMIT_NPROC) currently owned by `uid`, from /proc; 0 when unreadable."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                owner = threads = None
                for line in f:
                    if line.startswith("Uid:"):
                        owner = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        if owner == uid and threads:
            total += threads
    return total


def _kill_uid(uid: int) -> None:
    """SIGKILL every process owned by `uid` (run as that uid, so nothing else can be hit)."""
    kill = shutil.which("kill", path=_MINIMAL_PATH)
    if kill is None:
        return
    for _ in range(3):  # a fork bomb may race the first sweep; kill(-1) is one pass over the task list
        subprocess.run(
            [kill, "-KILL", "-1"],
            user=uid,
            group=uid,
            extra_groups=[],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            check=False,
        )
        if not _uid_alive(uid):
            return


def _uid_alive(uid: int) -> bool:
    return _user_task_count(uid) > 0


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Tail:
    """Keeps the last `limit` bytes of a stream and counts all of them."""

    def __init__(self, limit: int):
        self.limit, self.total, self.buf = limit, 0, bytearray()

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.buf += chunk
        if len(self.buf) > 2 * self.limit:
            del self.buf[: len(self.buf) - self.limit]

    def text(self) -> tuple[str, bool]:
        data = bytes(self.buf[-self.limit :]) if self.limit else b""
        return data.decode("utf-8", errors="replace"), self.total > len(data)


def run_program(
    source: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_processes: int = 32,
    max_file_mb: int = 64,
    max_open_files: int = 256,
    max_output_bytes: int = 64 * 1024,
    output_kill_bytes: int = 16 * 1024 * 1024,
    stdin: str | bytes | None = None,
    network_isolation: bool = True,
    require_network_isolation: bool = False,
    drop_privileges: bool | None = None,
    python: str | None = None,
) -> ExecutionResult:
    """Run one Python program in a fresh sandboxed subprocess; see the module docstring for what is enforced.

    `drop_privileges`: None (default) = drop to a fresh uid when running as root and an interpreter allows it.
    `require_network_isolation`: the child exits with an error instead of running without a new network namespace.
    """
    interpreter, drop = _choose_interpreter(python, drop_privileges)
    uid = _fresh_uid() if drop else None
    nproc = max_processes
    if uid is None and os.geteuid() != 0:
        nproc = _user_task_count(os.getuid()) + max_processes  # NPROC is per user: leave room for what runs already
    rlimits = {
        "RLIMIT_AS": int(memory_mb) * 1024 * 1024,
        "RLIMIT_CPU": math.ceil(timeout_s) + 1,
        "RLIMIT_NPROC": int(nproc),
        "RLIMIT_FSIZE": int(max_file_mb) * 1024 * 1024,
        "RLIMIT_NOFILE": int(max_open_files),
        "RLIMIT_CORE": 0,
    }
    workdir = tempfile.mkdtemp(prefix="sandbox-")
    start = time.monotonic()
    status_r = status_w = None
    proc = None
    try:
        program = os.path.join(workdir, "program.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(source)
        stdin_file = None
        if stdin is not None:
            stdin_path = os.path.join(workdir, ".stdin")
            with open(stdin_path, "wb") as f:
                f.write(stdin.encode() if isinstance(stdin, str) else stdin)
            stdin_file = open(stdin_path, "rb")  # noqa: SIM115 -- closed below
            os.unlink(stdin_path)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
        status_r, status_w = os.pipe()
        cfg = {
            "net": int(network_isolation),
            "require_net": int(require_network_isolation),
            "uid": "-" if uid is None else uid,
            "status_fd": status_w,
            **rlimits,
            "program": program,  # last: a path may contain "=" (split once) but not be followed by other keys
        }
        try:
            proc = subprocess.Popen(
                [interpreter, "-I", "-B", "-c", _BOOTSTRAP, *(f"{k}={v}" for k, v in cfg.items())],
                cwd=workdir,
                env={"PATH": _MINIMAL_PATH},
                stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=(status_w,),
            )
        finally:
            if stdin_file is not None:
                stdin_file.close()
            os.close(status_w)
            status_w = None
        return _supervise(proc, status_r, start, timeout_s, max_output_bytes, output_kill_bytes, uid)
    finally:
        if proc is not None and proc.poll() is None:
            _killpg(proc.pid)
            proc.wait()
        if uid is not None and _uid_alive(uid):  # the /proc scan is cheaper than the sweep itself
            _kill_uid(uid)
        for fd in (status_r, status_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(workdir, ignore_errors=True)


def _supervise(proc, status_r, start, timeout_s, max_output_bytes, output_kill_bytes, uid) -> ExecutionResult:
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    tails = {out_fd: _Tail(max_output_bytes), err_fd: _Tail(max_output_bytes)}
    flag = bytearray()
    deadline = start + timeout_s
    reason = None
    sel = selectors.DefaultSelector()
    for stream in (proc.stdout, proc.stderr):
        os.set_blocking(stream.fileno(), False)
        sel.register(stream.fileno(), selectors.EVENT_READ)
    sel.register(status_r, selectors.EVENT_READ)
    open_fds = 3
    try:
        exited_at = None
        while open_fds:
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now  # children may still hold the pipes: drain briefly, then stop reading
            if exited_at is not None and now - exited_at > 0.2:
                break
            events = sel.select(timeout=min(deadline - now, 0.05 if exited_at is not None else 0.1))
            if not events and exited_at is not None:
                break
            for key, _ in events:
                fd = key.fd
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    open_fds -= 1
                elif fd == status_r:
                    flag += chunk
                else:
                    tails[fd].add(chunk)
            if sum(t.total for t in tails.values()) > output_kill_bytes:
                reason = "output"
                break
        # pipes closed (or we gave up): the main process is done or must die
        if reason is None:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                reason = "timeout"
    finally:
        sel.close()
    _killpg(proc.pid)  # also kills leftovers in the group (background children holding no pipe)
    proc.wait()
    wall = time.monotonic() - start
    stdout, out_trunc = tails[out_fd].text()
    stderr, err_trunc = tails[err_fd].text()
    proc.stdout.close()
    proc.stderr.close()
    rc = proc.returncode
    if reason == "timeout":
        status, detail = "timeout", f"wall-clock timeout after {timeout_s:g} s"
    elif reason == "output":
        status, detail = "error", f"output limit exceeded ({output_kill_bytes} bytes)"
    elif rc == 0:
        status, detail = "pass", ""
    elif rc == -signal.SIGXCPU:
        status, detail = "timeout", "CPU-time limit"
    elif rc < 0:
        status, detail = "error", f"killed by signal {signal.Signals(-rc).name}"
    elif rc == ERROR_EXIT_CODE:
        status, detail = "error", _last_line(stderr)
    else:
        status, detail = "fail", _last_line(stderr) or f"exit code {rc}"
    return ExecutionResult(
        status=status,
        returncode=rc,
        wall_time_s=wall,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=out_trunc,
        stderr_truncated=err_trunc,
        detail=detail[:300],
        network_isolated=flag == b"1",
        privileges_dropped=uid is not None and bool(flag),
    )


def _last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()
    return ""


def run_programs(
    sources: Iterable[str],
    *,
    max_workers: int | None = None,
    stdins: Sequence[str | bytes | None] | None = None,
    **kwargs,
) -> BatchResult:
    """Run many programs concurrently (`max_workers` subprocesses at a time, default os.cpu_count()).

    `kwargs` go to `run_program`; `stdins`, when given, holds one stdin per source. Results keep the input order.
    """
    sources = list(sources)
    if stdins is not None and len(stdins) != len(sources):
        raise ValueError("stdins must have one entry per source")
    workers = max(1, max_workers or os.cpu_count() or 1)
    start = time.monotonic()

    def one(i: int) -> ExecutionResult:
        return run_program(sources[i], stdin=None if stdins is None else stdins[i], **kwargs)

    if workers == 1 or len(sources) <= 1:
        results = [one(i) for i in range(len(sources))]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox") as pool:
            results = list(pool.map(one, range(len(sources))))
    counts = Counter(dict.fromkeys(STATUSES, 0))
    counts.update(r.status for r in results)
    return BatchResult(results=tuple(results), counts=dict(counts), wall_time_s=time.monotonic() - start)
