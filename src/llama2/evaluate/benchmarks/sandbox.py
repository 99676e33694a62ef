"""Run model-written Python in a separate, limited process (HumanEval's functional correctness).

Each program runs in a fresh `python -I` (isolated: no user site, no PYTHON* variables, no script
dir on sys.path) in its own empty temporary directory, its own session (so a timeout kills every
process it started), with a small environment, stdout/stderr going to size-limited files.
Before the program, a bootstrap sets resource limits — CPU seconds, address space, file size, no
core dumps — and replaces `socket.socket`, `socket.create_connection` and `socket.socketpair` with
versions that raise, so a program cannot open network connections by accident.

The limits are set inside the child, before any program code runs, rather than in `preexec_fn`:
Python documents `preexec_fn` as unsafe when the parent has threads (the evaluation runner does),
and the effect is the same.

What this is not: a security boundary. Code that imports `_socket` or uses `ctypes`, or a process
running as root that raises its own hard limits, gets past it. Run untrusted code from unknown
sources inside a container or VM without network (e.g. `docker run --network none`).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timed_out"]

_OUTPUT_TAIL = 4096  # characters of stdout/stderr kept in the result

_BOOTSTRAP = """\
import resource, socket, sys
cpu, memory, fsize = (int(v) for v in sys.argv[1:4])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

def _no_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")

class _NoSocket(socket.socket):  # a class still, so modules that subclass socket.socket import
    __init__ = _no_network

socket.socket, socket.create_connection, socket.socketpair = _NoSocket, _no_network, _no_network
del resource, socket, cpu, memory, fsize, _NoSocket, _no_network
import runpy
runpy.run_path("program.py", run_name="__main__")
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits: wall-clock and CPU seconds, address space and output file size in MiB."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mib: int = 1024
    output_mib: int = 16


@dataclass(frozen=True)
class ExecutionResult:
    """How a program ended: `passed` (exit 0), `failed` (an exception, a non-zero exit, a limit other
    than time) or `timed_out` (wall-clock or CPU limit), with a one-line `reason` and output tails."""

    status: Status
    reason: str
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ExecutionResult:
    """Run `source` as a script in a fresh, limited interpreter and report how it ended."""
    with tempfile.TemporaryDirectory(prefix="llama2-sandbox-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        (work / "program.py").write_text(source, encoding="utf-8")
        (work / "bootstrap.py").write_text(_BOOTSTRAP, encoding="utf-8")
        args = [str(limits.cpu_s), str(limits.memory_mib << 20), str(limits.output_mib << 20)]
        env = {"PATH": os.defpath, "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8"}
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err:
            started = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-I", "bootstrap.py", *args], cwd=tmp, env=env,
                                       stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                returncode: int | None = process.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_group(process)
            duration = time.perf_counter() - started
        stdout = _tail(work / "stdout")
        stderr = _tail(work / "stderr")
    status, reason = _verdict(returncode, stderr, limits)
    return ExecutionResult(status, reason, returncode, stdout, stderr, duration)


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the program and anything it spawned (its session), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _tail(path: Path) -> str:
    data = path.read_bytes()
    return data[-_OUTPUT_TAIL:].decode("utf-8", errors="replace")


def _verdict(returncode: int | None, stderr: str, limits: SandboxLimits) -> tuple[Status, str]:
    if returncode is None:
        return "timed_out", f"wall-clock limit of {limits.timeout_s:g}s reached"
    if returncode == 0:
        return "passed", "passed"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timed_out", f"CPU-time limit of {limits.cpu_s}s reached"
    last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
    if f"[Errno {errno.EFBIG}]" in last:  # Python ignores SIGXFSZ: the write fails instead
        return "failed", f"file size limit of {limits.output_mib} MiB reached"
    if last.startswith("MemoryError"):
        return "failed", f"memory limit of {limits.memory_mib} MiB reached (MemoryError)"
    if returncode < 0:
        return "failed", f"killed by signal {signal.Signals(-returncode).name}"
    return "failed", last.strip() or f"exit status {returncode}"
