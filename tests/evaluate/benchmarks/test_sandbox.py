"""The subprocess sandbox: limits end runaway programs, the network is refused, failures say why."""

from __future__ import annotations

from llama2.evaluate.benchmarks.sandbox import SandboxLimits, run_program

FAST = SandboxLimits(timeout_s=5.0, cpu_s=1, memory_mib=256, output_mib=1)


def test_a_passing_program_and_its_output():
    result = run_program("print('hello')\n", FAST)
    assert (result.status, result.returncode, result.stdout) == ("passed", 0, "hello\n") and result.passed


def test_a_failing_assert_is_reported_with_its_message():
    result = run_program("def check(f):\n    assert f(2) == 5, 'add(2) should be 5'\n\ncheck(lambda x: x)\n", FAST)
    assert result.status == "failed" and result.reason == "AssertionError: add(2) should be 5"
    assert "Traceback" in result.stderr


def test_an_infinite_loop_hits_the_cpu_limit():
    result = run_program("while True:\n    pass\n", FAST)
    assert result.status == "timed_out" and "CPU-time limit of 1s" in result.reason
    assert result.duration_s < 4


def test_a_sleeping_program_hits_the_wall_clock_limit():
    result = run_program("import time\ntime.sleep(60)\n", SandboxLimits(timeout_s=1.0, cpu_s=5))
    assert result.status == "timed_out" and result.returncode is None and "wall-clock limit of 1s" in result.reason


def test_a_memory_hog_hits_the_address_space_limit():
    result = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))\n", FAST)
    assert result.status == "failed" and "memory limit of 256 MiB" in result.reason


def test_sockets_cannot_be_created():
    for source in ("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_STREAM)\n",
                   "import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
                   "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/')\n"):
        result = run_program(source, FAST)
        assert result.status == "failed" and "network access is disabled in the sandbox" in result.reason, source


def test_endless_output_hits_the_file_size_limit():
    result = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", FAST)
    assert result.status == "failed" and "file size limit of 1 MiB" in result.reason
    assert len(result.stdout) <= 4096


def test_programs_run_in_an_isolated_empty_folder():
    result = run_program("import os, sys\nprint(sorted(os.listdir('.')), sys.flags.isolated)\n", FAST)
    assert result.stdout.strip() == "['bootstrap.py', 'program.py', 'stderr', 'stdout'] 1"
