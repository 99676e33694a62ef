"""`llama2 serve`: the config is validated whole before anything loads, and the command serves on
the port it announces."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

import httpx
import openai
import pytest

from llama2.cli.main import main
from llama2.serve.access_log import RedactSecrets, redact_path
from llama2.serve.config import load_config, model_from_argument
from llama2.serve.store import Store


def test_every_config_problem_is_reported_at_once(tmp_path, capsys):
    config = tmp_path / "serve.yaml"
    config.write_text(
        "server: {port: 99999, colour: blue}\n"
        "models:\n"
        "  a: {spec: 'local:tiny', max_queue: 0}\n"
        "  b: {spec: 'nosuch:model'}\n"
        "  c: {spec: 'azure:gpt', api_key: sk-inline}\n"
        "  d: {spec: 'local:tiny', flavour: mint}\n"
    )
    assert main(["serve", "--config", str(config)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "6 problem(s)" in error
    for part in ("server.port", "'colour'", "max_queue must be", "unknown provider 'nosuch'", "api_key_env", "'flavour'"):
        assert part in error


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 1
    assert "no such config file" in capsys.readouterr().err


def test_model_arguments_name_themselves():
    assert model_from_argument("local:default").name == "default"
    assert model_from_argument("local:/models/llama-2-7b-chat/").name == "llama-2-7b-chat"
    assert model_from_argument("chat=azure:gpt-35-turbo").name == "chat"
    assert model_from_argument("http://127.0.0.1:8080/v1#llama").name == "llama"
    assert [m.name for m in load_config(None, {}, []).models] == ["default-chat", "default"]


def test_serve_announces_its_url_and_answers(tmp_path, tiny_checkpoint):
    store = Store.open(tmp_path)
    store.add_user("cy@example.com")
    _, key = store.create_key("cy@example.com")
    store.close()
    command = [sys.executable, "-m", "llama2", "serve", "--model", f"tiny=local:{tiny_checkpoint}",
               "--port", "0", "--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        for line in process.stdout:
            found = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
            if found:
                url = found.group(1)
                break
        assert url, "llama2 serve never announced its URL"
        api = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        reply = api.completions.create(model="tiny", prompt="Once upon a time", max_tokens=3, temperature=0)
        assert reply.usage.completion_tokens == 3
        httpx.get(url.removesuffix("/v1") + "/set-password?token=invitation-secret&next=%2F")
    finally:
        process.terminate()
        process.wait(timeout=20)
    access_log = process.stdout.read()
    assert "POST /v1/completions" in access_log
    assert "invitation-secret" not in access_log and "/set-password?token=[redacted]&next=%2F" in access_log


def test_access_log_lines_lose_one_time_secrets_only():
    assert redact_path("/setup?token=abc") == "/setup?token=[redacted]"
    assert redact_path("/auth/callback?code=c&state=s&x=1") == "/auth/callback?code=[redacted]&state=[redacted]&x=1"
    assert redact_path("/v1/models?after=abc") == "/v1/models?after=abc"
    assert redact_path("/chat") == "/chat"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/setup?token=abc", "1.1", 200), None)
    assert RedactSecrets().filter(record) and "abc" not in record.getMessage()


@pytest.mark.parametrize("argument", ["local:", "azure:"])
def test_bad_model_arguments_fail_before_loading(argument, capsys):
    assert main(["serve", "--model", argument]) == 1
    assert "names no model" in capsys.readouterr().err
