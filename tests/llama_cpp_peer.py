"""A pytest plugin with llama.cpp's OpenAI-compatible server (`llama_cpp.server`) running the GGUF
export of the tiny checkpoint on loopback: the peer the provider and gateway tests forward to.

Skipped when llama-cpp-python's server is not installed, except under CI (env CI set), where it
must be.
"""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

GGML_TYPE_F32 = "0"  # an f32 KV cache, so llama.cpp computes what our fp32 engine computes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"llama.cpp server not up within {timeout_s} s")


def require_llama_cpp_server() -> None:
    try:
        importlib.import_module("llama_cpp.server.app")
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("llama-cpp-python's server is not installed (pip install 'llama-cpp-python[server]')")


@pytest.fixture(scope="session")
def llama_cpp_url(tiny_checkpoint, tmp_path_factory):
    """`http://127.0.0.1:PORT` of llama.cpp's server on the tiny checkpoint (f32 weights and cache)."""
    require_llama_cpp_server()
    from llama2.api import Llama

    gguf = tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf"
    Llama.from_pretrained(str(tiny_checkpoint), device="cpu").save(gguf, format="gguf", dtype="f32")
    port = free_port()
    command = [
        sys.executable, str(Path(__file__).with_name("llama_cpp_server.py")), "--model", str(gguf),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "256", "--n_threads", "1", "--n_threads_batch", "1",
        "--type_k", GGML_TYPE_F32, "--type_v", GGML_TYPE_F32, "--verbose", "false",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
