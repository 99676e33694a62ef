"""Start llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server`, same arguments) with
llama.cpp's "extra buffer types" off: their AMX kernels crash on this project's CPUs (see
tests/model/test_llama_cpp.py), and the server has no setting for it, so the default model
parameters are patched before the server loads the model."""

from __future__ import annotations

import sys

import llama_cpp
from llama_cpp.server.__main__ import main

_defaults = llama_cpp.llama_cpp.llama_model_default_params


def _without_extra_buffers():
    params = _defaults()
    params.use_extra_bufts = False
    return params


if __name__ == "__main__":
    llama_cpp.llama_cpp.llama_model_default_params = _without_extra_buffers
    sys.argv[0] = "llama_cpp.server"
    main()
