"""The commands end to end on a tiny checkpoint: output, --json, stdin, and one-line errors."""

import json
import subprocess
import sys

import pytest

from llama2.api import Llama
from llama2.cli.main import main
from llama2.model.checkpoint import save_meta
from llama2.model.config import get_preset
from llama2.model.transformer import Transformer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_tokenizer_path):
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_meta(Transformer.random(get_preset("tiny"), seed=3), get_preset("tiny"), folder, tokenizer=tiny_tokenizer_path)
    return folder


def test_generate_json_matches_the_python_api(checkpoint, capsys):
    assert main(["generate", "Once upon a time", "--model", str(checkpoint), "--temperature", "0",
                 "--max-new-tokens", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [expected] = Llama.from_pretrained(checkpoint).generate("Once upon a time", max_new_tokens=6, temperature=0)
    assert out["tokens"] == expected.tokens and out["text"] == expected.text
    assert out["usage"]["completion_tokens"] == len(expected.tokens)


def test_generate_streams_the_prompt_and_its_continuation(checkpoint, capsys):
    assert main(["generate", "Once upon", "--model", str(checkpoint), "--temperature", "0", "-n", "5"]) == 0
    [expected] = Llama.from_pretrained(checkpoint).generate("Once upon", max_new_tokens=5, temperature=0)
    assert capsys.readouterr().out == "Once upon" + expected.text + "\n"


def test_chat_reads_turns_from_stdin(checkpoint):
    run = subprocess.run(
        [sys.executable, "-m", "llama2", "chat", "--model", str(checkpoint), "--temperature", "0", "-n", "4"],
        input=b"Hello there\n/reset\nWhat is a llama?\n", capture_output=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()
    llama = Llama.from_pretrained(checkpoint)
    first = llama.chat([{"role": "user", "content": "Hello there"}], max_new_tokens=4, temperature=0)[0].text
    second = llama.chat([{"role": "user", "content": "What is a llama?"}], max_new_tokens=4, temperature=0)[0].text
    assert run.stdout.decode() == f"{first}\n{second}\n"  # bytes: random weights may emit "\r"
    assert "conversation reset" in run.stderr.decode()


def test_info_on_a_checkpoint_and_a_preset(checkpoint, capsys):
    assert main(["info", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == get_preset("tiny").n_params()
    assert main(["info", "13b"]) == 0
    assert "13,015,864,320 (13.02B)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "hi", "--model", "/no/such/model"], "is not a bundled model"),
        (["generate", "hi", "--model", "tiny"], "has no tokenizer"),
        (["info", "huge"], "is not a bundled model"),
        (["generate", "hi", "--model", "tiny-mha", "--dtype", "f8"], "unknown dtype 'f8'"),
    ],
)
def test_errors_are_one_line_with_exit_code_1(argv, message):
    run = subprocess.run([sys.executable, "-m", "llama2", *argv], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and message in run.stderr and "Traceback" not in run.stderr


def test_context_overflow_is_reported_not_cut(checkpoint):
    run = subprocess.run([sys.executable, "-m", "llama2", "generate", "word " * 300, "--model", str(checkpoint)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "context window" in run.stderr


def test_a_reader_that_closes_early_ends_the_command_quietly():
    """`llama2 ... | head`: the broken pipe ends the command with exit 1 and no traceback."""
    script = (
        "import argparse, sys\n"
        "from llama2.cli import main as cli\n"
        "def flood_parser():\n"
        "    parser = argparse.ArgumentParser()\n"
        "    flood = parser.add_subparsers().add_parser('flood')\n"
        "    flood.set_defaults(func=lambda args: [print('x' * 1000) for _ in range(10_000)])\n"
        "    return parser\n"
        "cli.build_parser = flood_parser\n"
        "sys.exit(cli.main(['flood']))\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer.stdout.read(10)
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    assert writer.wait(timeout=60) == 1
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
