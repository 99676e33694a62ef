"""DPO: the loss equals TRL's `DPOTrainer` on the same model (exported with our converter), batch and
β; a few steps raise the chosen-vs-rejected log-ratio margin; two-step smoke runs (full and LoRA)
change the weights; π0's log-probs are kept for resuming and refused for other data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from llama2.cli.main import main
from llama2.data.preference import read_preferences
from llama2.data.preference_examples import build_preference_examples, collate_pairs
from llama2.errors import ConfigError
from llama2.model.checkpoint import load_state, save_hf
from llama2.model.config import get_preset
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.config import load_config, parse_config
from llama2.train.losses import dpo_loss, response_logps
from llama2.train.recipes.dpo import DPO, REFERENCE_FILE, DPOConfig

from .torchrun import train_on_two_processes

REPO = Path(__file__).resolve().parents[2]
PAIRS = [
    {"prompt": "Say yes.", "chosen": "yes", "rejected": "no, I will not"},
    {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fox."}],
     "chosen": "The quick brown fox.", "rejected": "A dog."},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "Tell me a story."}],
     "chosen": "Once upon a time there was a little robot who loved to read books.", "rejected": "No."},
    {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "It is 5.", "strength": "slightly_better"},
]


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PAIRS * 3))
    return path


def run_dpo(tmp_path: Path, init: Path, data: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    argv = ["train", "dpo", f"init={init}", f"data={data}", f"output_dir={out}", "max_steps=2", "batch_size=2",
            "lr=1e-3", "log_every=1", "tensorboard=false", "device=cpu", "dtype=float32", *extra, "--json"]
    return main(argv), out


# ---------------------------------------------------------------------------------------------- TRL


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_loss_equals_trl_dpo_trainer_on_the_same_model_batch_and_beta(loss, tmp_path, tiny_checkpoint, pairs_file):
    trl = pytest.importorskip("trl", reason="trl is in the [test] extra")
    transformers = pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    args = get_preset("tiny")
    reference = Transformer.random(args, seed=3)
    policy = Transformer.random(args, seed=3)
    with torch.no_grad():  # the policy has moved away from π0, so the log-ratios are not zero
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(5)) * 0.02)
    tokenizer = Tokenizer(tiny_checkpoint / "tokenizer.model")
    for name, model in (("policy", policy), ("reference", reference)):
        save_hf(model, args, tmp_path / name, tokenizer=tokenizer)

    recipe = DPO(parse_config(DPOConfig, {"init": str(tiny_checkpoint), "data": str(pairs_file),
                                          "output_dir": str(tmp_path / "run"), "max_steps": 1, "beta": 0.1, "loss": loss}))
    examples = build_preference_examples(tokenizer, read_preferences(pairs_file)[: len(PAIRS)], 256)
    batch = collate_pairs(examples)
    with torch.no_grad():
        batch["reference"] = response_logps(reference(batch["tokens"]), batch["targets"], batch["loss_mask"])
        ours = recipe.loss(policy, batch)
    ours_mean = ours.loss_sum.item() / ours.count

    hf = {name: transformers.LlamaForCausalLM.from_pretrained(tmp_path / name, dtype=torch.float32, local_files_only=True)
          for name in ("policy", "reference")}
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "policy")
    config = trl.DPOConfig(output_dir=str(tmp_path / "trl"), beta=0.1, loss_type=[loss], report_to=[], use_cpu=True,
                           bf16=False, max_length=None, precompute_ref_log_probs=False)  # bf16 is on by default
    dataset = datasets.Dataset.from_list([{"prompt": "Say yes.", "chosen": "yes", "rejected": "no"}])
    trainer = trl.DPOTrainer(model=hf["policy"], ref_model=hf["reference"], args=config, train_dataset=dataset,
                             processing_class=hf_tokenizer)
    features = [{"prompt_ids": e.chosen[: e.prompt_len], "chosen_ids": e.chosen[e.prompt_len:],
                 "rejected_ids": e.rejected[e.prompt_len:]} for e in examples]  # the very same token ids
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, trainer.data_collator(features)).item()
    assert abs(ours_mean) > 1e-3 and not math.isclose(ours_mean, math.log(2) if loss == "sigmoid" else 25.0, abs_tol=1e-3)
    assert ours_mean == pytest.approx(theirs, abs=1e-5)


def test_label_smoothing_is_conservative_dpo():
    chosen, rejected = torch.tensor([-3.0, -8.0]), torch.tensor([-5.0, -6.0])
    ref_chosen, ref_rejected = torch.tensor([-4.0, -7.0]), torch.tensor([-4.5, -6.5])
    d = 0.1 * ((chosen - ref_chosen) - (rejected - ref_rejected))
    expected = -0.8 * torch.nn.functional.logsigmoid(d) - 0.2 * torch.nn.functional.logsigmoid(-d)
    got = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.1, label_smoothing=0.2)
    torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------------------------------- training


def test_a_few_steps_raise_the_log_ratio_margin(tmp_path, tiny_checkpoint, pairs_file, capsys):
    code, out = run_dpo(tmp_path, tiny_checkpoint, pairs_file, "max_steps=6", "batch_size=4", "val_data=" + str(pairs_file),
                        "eval_every=6", "eval_batches=3")
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert abs(records[0]["margin"]) < 1e-4 and records[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # step 1: π = π0
    final = json.loads(capsys.readouterr().out)["metrics"]
    assert final["val_margin"] > 0.5 and final["val_accuracy"] == 1.0

    # The same margin measured independently: the trained model against init on the same replies.
    tokenizer = Tokenizer(tiny_checkpoint / "tokenizer.model")
    batch = collate_pairs(build_preference_examples(tokenizer, read_preferences(pairs_file), 256))
    margins = {}
    for name, path in (("trained", out / "model"), ("init", tiny_checkpoint)):
        args, state = load_state(path)
        model = Transformer(args)
        model.load_state_dict({k: v.float() for k, v in state.items()})
        with torch.no_grad():
            logps = response_logps(model(batch["tokens"]), batch["targets"], batch["loss_mask"])
        margins[name] = logps.chunk(2)
    ratio = [(margins["trained"][i] - margins["init"][i]) for i in (0, 1)]
    assert (0.1 * (ratio[0] - ratio[1])).mean().item() == pytest.approx(final["val_margin"], rel=1e-3)


def test_two_steps_change_the_weights_and_resume_reuses_the_reference(tmp_path, tiny_checkpoint, pairs_file, capsys):
    code, out = run_dpo(tmp_path, tiny_checkpoint, pairs_file, "val_fraction=0.25", "eval_every=2", "eval_batches=1")
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert all(math.isfinite(metrics[k]) for k in ("loss", "margin", "val_loss", "val_margin"))
    _, before = load_state(tiny_checkpoint)
    _, after = load_state(out / "model")
    assert set(before) == set(after) and any(not torch.equal(before[k].float(), after[k].float()) for k in before)
    saved = torch.load(out / REFERENCE_FILE, weights_only=True)
    assert saved["train"].shape == (9, 2) and saved["val"].shape == (3, 2)
    assert (saved["train"] < 0).all()

    code, _ = run_dpo(tmp_path, tiny_checkpoint, pairs_file, "val_fraction=0.25", "eval_every=2", "eval_batches=1", "max_steps=3")
    assert code == 0 and "resumed from" in capsys.readouterr().err
    assert torch.equal(torch.load(out / REFERENCE_FILE, weights_only=True)["train"], saved["train"])

    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(p) + "\n" for p in PAIRS[::-1] * 3))
    recipe = DPO(parse_config(DPOConfig, {"init": str(tiny_checkpoint), "data": str(other), "output_dir": str(out),
                                          "max_steps": 4, "val_fraction": 0.25}))
    from llama2.train.distributed import Runtime

    runtime = Runtime(0, 1, 0, torch.device("cpu"))
    recipe.prepare(runtime)
    with pytest.raises(ConfigError, match="reference log-probs for other data or another init"):
        recipe.batches(3, runtime)


def test_lora_trains_only_adapters_and_merges(tmp_path, tiny_checkpoint, pairs_file, capsys):
    code, out = run_dpo(tmp_path, tiny_checkpoint, pairs_file, "lora.r=4", "lora.targets=wq,wv", "loss=ipo")
    assert code == 0
    saved = torch.load(out / "checkpoints" / "step-00000002" / "consolidated.00.pth", weights_only=True)
    _, base = load_state(tiny_checkpoint)
    assert all(torch.equal(saved[k], base[k].float()) for k in base)
    assert any(k.endswith("lora_B") and saved[k].abs().sum() > 0 for k in saved)
    assert (out / "checkpoints" / "step-00000002" / "adapter" / "adapter_config.json").is_file()
    _, merged = load_state(out / "model")
    assert not torch.equal(merged["layers.0.attention.wq.weight"].float(), base["layers.0.attention.wq.weight"].float())


def test_bad_data_fails_with_file_and_line(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "Say no.", "chosen": "no", "rejected": "no"}) + "\n")
    code, _ = run_dpo(tmp_path, tiny_checkpoint, bad)
    assert code == 1
    assert f"{bad}:2: fields 'chosen' and 'rejected' are the same reply" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["dpo-tiny", "dpo-7b"])
def test_shipped_recipes_are_valid(name, tmp_path, pairs_file, tiny_checkpoint):
    overrides = [f"output_dir={tmp_path}", f"data={pairs_file}", f"val_data={pairs_file}"]
    if name == "dpo-7b":
        overrides += [f"init={tiny_checkpoint}", "seq_len=256"]  # the test model's window; the recipe's is 4096
    config = load_config(DPOConfig, REPO / "recipes" / f"{name}.yaml", overrides, world_size=8)
    assert (config.beta, config.loss) == (0.1, "sigmoid")
    if name == "dpo-7b":
        assert (config.lr, config.warmup_steps, config.min_lr_ratio) == (1e-6, 150, 1.0)
        assert config.batch_size * config.grad_accum * 8 == 64


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_checkpoint, pairs_file):
    """Under FSDP on 2 CPU processes π0's log-probs are split across ranks and gathered, and each step
    equals one process's on the same global batch."""
    common = [f"init={tiny_checkpoint}", f"data={pairs_file}", "max_steps=3", "lr=1e-3", "log_every=1",
              "tensorboard=false", "device=cpu", "dtype=float32", "min_lr_ratio=1.0"]
    assert main(["train", "dpo", *common, f"output_dir={tmp_path / 'single'}", "batch_size=4"]) == 0
    train_on_two_processes("dpo", [*common, f"output_dir={tmp_path / 'fsdp'}", "batch_size=2"])
    single, sharded = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                       for name in ("single", "fsdp"))
    for got, want in zip(sharded, single, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4, abs=1e-6)
        assert got["margin"] == pytest.approx(want["margin"], rel=1e-3, abs=1e-5)
    references = [torch.load(tmp_path / name / REFERENCE_FILE, weights_only=True)["train"] for name in ("single", "fsdp")]
    torch.testing.assert_close(references[1], references[0], rtol=1e-5, atol=1e-4)
