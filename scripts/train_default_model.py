"""Rebuild the bundled default model from scratch with one command:

    python scripts/train_default_model.py [--cache ~/.cache/llama2] [--steps N]

1. builds the public-domain corpus from Debian packages (scripts/build_corpus.py),
2. trains its 4096-piece Llama-style tokenizer (`llama2 data train-tokenizer`),
3. packs it into token shards (`llama2 data tokenize`),
4. pretrains with recipes/pretrain-default.yaml (`llama2 train pretrain`, resumable),
5. exports the final checkpoint as an f32 Hugging Face folder into src/llama2/assets/default with a
   training.json model card (corpus, tokens seen, validation perplexity) that `llama2 info default`
   prints.
Each step is skipped when its output exists, so a killed run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from common import llama2, read_metrics, run  # noqa: E402  (scripts/ is a folder of scripts, not a package)
RECIPE = ROOT / "recipes" / "pretrain-default.yaml"
ASSET = ROOT / "src" / "llama2" / "assets" / "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/llama2").expanduser())
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "default")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's max_steps")
    options = parser.parse_args()

    corpus = options.cache / "corpus"
    shards = corpus / "shards"
    if not (corpus / "corpus.jsonl").exists():
        run(sys.executable, str(ROOT / "scripts" / "build_corpus.py"), "--out", str(corpus))
    if not (corpus / "tokenizer.model").exists():
        llama2("data", "train-tokenizer", str(corpus / "corpus.jsonl"), "--vocab-size", "4096",
               "--out", str(corpus / "tokenizer.model"))
    if not (shards / "manifest.json").exists():
        llama2("data", "tokenize", str(corpus / "corpus.jsonl"), "--tokenizer", str(corpus / "tokenizer.model"),
               "--out", str(shards), "--val-fraction", "0.01", "--seed", "0")
    overrides = [f"data={shards}", f"tokenizer={shards / 'tokenizer.model'}", f"output_dir={options.run_dir}"]
    if options.steps:
        overrides.append(f"max_steps={options.steps}")
    llama2("train", "pretrain", str(RECIPE), *overrides)
    export(options.run_dir, corpus)


def export(run_dir: Path, corpus: Path) -> None:
    """Final checkpoint -> f32 HF folder in the package (bf16 matmuls of this size are slow on many
    CPUs), plus the model card."""
    checkpoint = sorted((run_dir / "checkpoints").glob("step-*"))[-1]
    metrics, last_eval = read_metrics(run_dir)
    staging = ASSET.with_name("default.new")
    shutil.rmtree(staging, ignore_errors=True)
    llama2("convert", str(checkpoint), str(staging), "--to", "hf", "--dtype", "f32")
    sources = json.loads((corpus / "sources.json").read_text())
    card = {
        "kind": "base model (pretrained only; not chat-tuned)",
        "recipe": "recipes/pretrain-default.yaml",
        "corpus": "; ".join(f"{s['package']}: {s['licence']}" for s in sources),
        "corpus_tokens": json.loads((corpus / "shards" / "manifest.json").read_text())["splits"]["train"]["tokens"],
        "tokens_seen": metrics[-1]["tokens"],
        "steps": metrics[-1]["step"],
        "final_train_loss": round(metrics[-1]["loss"], 4),
        "validation_loss": round(last_eval["val_loss"], 4),
        "validation_perplexity": round(last_eval["val_ppl"], 2),
        "trained": f"{date.today().isoformat()}, 2 CPU cores",
        "reproduce": "python scripts/train_default_model.py",
    }
    (staging / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    shutil.rmtree(ASSET, ignore_errors=True)
    staging.rename(ASSET)
    print(f"exported {checkpoint} -> {ASSET}")


if __name__ == "__main__":
    main()
