"""`llama2 serve` on a first start: it prints the web chat's URL and a one-time setup link, and that
link creates the admin account."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from llama2.serve.store import Store

from .conftest import PASSWORD, form_fields


def test_a_first_start_prints_a_setup_link_that_creates_the_admin(tmp_path, tiny_checkpoint):
    command = [sys.executable, "-m", "llama2", "serve", "--model", f"tiny=local:{tiny_checkpoint}", "--port", "0",
               "--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        printed = []
        for line in process.stdout:
            printed.append(line)
            if "admin add-user" in line:  # the line after the link
                break
        text = "".join(printed)
        chat = re.search(r"web chat at (http://127\.0\.0\.1:\d+)/", text)
        link = re.search(r"(http://127\.0\.0\.1:\d+)(/setup\?token=[\w-]+)", text)
        assert chat and link, text
        assert "llama2 admin add-user" in text  # the other way to make the admin
        client = httpx.Client(base_url=link.group(1))
        fields = form_fields(client.get(link.group(2)).text)
        response = client.post("/setup", data={**fields, "email": "me@example.com", "password": PASSWORD,
                                                "confirm": PASSWORD})
        assert response.status_code == 303 and client.get("/").status_code == 200
        assert client.get(link.group(2)).status_code == 404  # spent
    finally:
        process.terminate()
        process.wait(timeout=20)
    with Store.open(tmp_path) as store:
        assert store.get_user("me@example.com").role == "admin"
