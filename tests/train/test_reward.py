"""Reward models: the ranking loss with each margin equals a hand computation, the safety term too,
and the centring term TRL's RewardTrainer loss as well; a short run with centring scores near 0; a
short run learns an easy held-out preference; scores agree batched and alone, and survive
save -> load; two-step smoke runs (full and LoRA) change the weights; bad data names file:line."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

import llama2
from llama2.cli.main import main
from llama2.data.preference import MARGINS, STRENGTHS, read_preferences
from llama2.data.preference_examples import PreferenceExample, collate_pairs
from llama2.errors import CheckpointError
from llama2.evaluate.reward import reward_report, score_pairs
from llama2.model.checkpoint import load_state, read_model_args
from llama2.model.reward import HEAD, RewardModel, RewardTransformer, initial_reward_state
from llama2.train.config import load_config, parse_config
from llama2.train.losses import SAFE, UNLABELLED, UNSAFE, centring_loss, ranking_loss, safety_aux_loss
from llama2.train.recipes.reward import RewardConfig, RewardRecipe

from .torchrun import train_on_two_processes

REPO = Path(__file__).resolve().parents[2]
WORDS = ("yes", "no")
# Prompts ask for one of two words; the chosen reply is the word asked for. Every reply is chosen as
# often as rejected, so only a model that reads the prompt ranks the pairs: an easy signal that no
# reply-only score gets above 50%, with held-out prompt templates.
TEMPLATES = [f"{a}{b} {{w}}{c}" for a, b, c in itertools.product(
    ["Please ", "Now ", "Kindly ", "OK, ", ""], ["say", "answer with", "reply with", "write"], [".", "!", " please.", " now."])]
random.Random(0).shuffle(TEMPLATES)


def word_pairs(templates: list[str]) -> list[dict]:
    return [{"prompt": t.format(w=w), "chosen": w, "rejected": v, "strength": "better"}
            for t in templates for w, v in (WORDS, WORDS[::-1])]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    records = word_pairs(TEMPLATES[:8])
    for i, record in enumerate(records):
        record |= {"strength": STRENGTHS[i % 4], "chosen_safe": True, "rejected_safe": i % 3 != 0}
    return write_jsonl(tmp_path / "pairs.jsonl", records)


def run_reward(tmp_path: Path, init: Path, data: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "run"
    argv = ["train", "reward", f"init={init}", f"data={data}", f"output_dir={out}", "max_steps=2", "batch_size=4",
            "lr=1e-3", "log_every=1", "tensorboard=false", "device=cpu", "dtype=float32", *extra, "--json"]
    return main(argv), out


# ---------------------------------------------------------------------------------------------- losses


class LastTokenScore(nn.Module):
    """A stand-in reward model: the score at each position is the token id / 10."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float() / 10


def example(chosen_last: int, rejected_last: int, strength: str, safe: tuple[bool | None, bool | None] = (None, None)):
    return PreferenceExample([1, 5, chosen_last], [1, 5, 7, rejected_last], 2, STRENGTHS.index(strength), *safe)


@pytest.mark.parametrize("variant", ["none", "small", "large"])
def test_ranking_loss_with_each_margin_equals_a_hand_computation(variant, tmp_path, tiny_checkpoint, pairs_file):
    recipe = RewardRecipe(parse_config(RewardConfig, {"init": str(tiny_checkpoint), "data": str(pairs_file),
                                                      "output_dir": str(tmp_path), "max_steps": 1, "margin": variant}))
    rewards = {"significantly_better": (30, 12), "better": (25, 20), "slightly_better": (14, 9), "negligibly_better": (8, 11)}
    batch = collate_pairs([example(c, r, s) for s, (c, r) in rewards.items()])
    out = recipe.loss(LastTokenScore(), batch)
    paper = {"small": (1, 2 / 3, 1 / 3, 0), "large": (3, 2, 1, 0), "none": (0, 0, 0, 0)}[variant]  # Table 27
    expected = 0.0
    for (c, r), m in zip(rewards.values(), paper):
        expected += -math.log(1 / (1 + math.exp(-(c / 10 - r / 10 - m))))  # -log σ(r_c - r_r - m(r))
    assert out.count == 4
    assert out.loss_sum.item() == pytest.approx(expected, rel=1e-6)
    assert out.sums["accuracy"].item() == 3  # all but the negligibly-better pair rank right
    if variant != "none":
        assert [MARGINS[variant][s] for s in STRENGTHS] == pytest.approx(paper)


def test_packed_rows_give_the_padded_rows_rewards_and_gradients():
    from llama2.model.config import get_preset
    from llama2.model.reward import last_token_rewards, pad_right
    from llama2.train.recipes.reward import packed_rewards

    model = RewardTransformer(get_preset("tiny"))
    model.init_weights(torch.Generator().manual_seed(0))
    nn.init.normal_(model.reward_head.weight, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    rows = [torch.randint(3, 500, (n,), generator=generator).tolist() for n in (40, 12, 7, 33, 25, 5, 18, 40)]
    tokens, lengths = pad_right(rows)  # 8 rows of 40; packed first-fit: 5 rows
    found, rows_run = {}, []
    model.register_forward_pre_hook(lambda module, args: rows_run.append(args[0].shape[0]))
    for name, rewards in (("padded", last_token_rewards), ("packed", packed_rewards)):
        model.zero_grad()
        scores = rewards(model, tokens, lengths)
        scores.square().sum().backward()
        found[name] = scores.detach(), model.layers[0].attention.wq.weight.grad.clone()
    assert rows_run == [8, 5] and found["padded"][0].abs().max() > 1.0
    torch.testing.assert_close(found["packed"][0], found["padded"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(found["packed"][1], found["padded"][1], rtol=1e-4, atol=1e-5)


def test_safety_term_pushes_safe_replies_above_zero_and_unsafe_below(tmp_path, tiny_checkpoint, pairs_file):
    rewards = torch.tensor([2.0, -1.0, 0.5, 3.0])
    labels = torch.tensor([SAFE, UNSAFE, UNLABELLED, UNSAFE])
    softplus = lambda x: math.log1p(math.exp(x))  # -log σ(x) = softplus(-x)
    expected = [softplus(-2.0), softplus(-1.0), 0.0, softplus(3.0)]
    assert safety_aux_loss(rewards, labels).tolist() == pytest.approx(expected)
    assert ranking_loss(torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))

    settings = {"init": str(tiny_checkpoint), "data": str(pairs_file), "output_dir": str(tmp_path), "max_steps": 1,
                "margin": "none"}
    batch = collate_pairs([example(20, 10, "better", (True, False)), example(5, 30, "better", (None, None))])
    plain = RewardRecipe(parse_config(RewardConfig, settings)).loss(LastTokenScore(), batch)
    weighted = RewardRecipe(parse_config(RewardConfig, {**settings, "safety_aux_weight": 0.5})).loss(LastTokenScore(), batch)
    aux = softplus(-2.0) + softplus(1.0)  # the chosen reply of pair 0 is safe (r=2), its rejected unsafe (r=1)
    assert weighted.sums["safety_aux"].item() == pytest.approx(aux)
    assert weighted.loss_sum.item() == pytest.approx(plain.loss_sum.item() + 0.5 * aux)


def test_centring_term_equals_a_hand_computation_and_trls_reward_trainer(tmp_path, tiny_checkpoint, pairs_file):
    from collections import defaultdict
    from types import SimpleNamespace

    assert centring_loss(torch.tensor([2.0, -1.0]), torch.tensor([3.0, 0.5])).tolist() == pytest.approx([25.0, 0.25])
    settings = {"init": str(tiny_checkpoint), "data": str(pairs_file), "output_dir": str(tmp_path), "max_steps": 1}
    scores = {"significantly_better": (30, 12), "better": (25, 20), "slightly_better": (14, 9), "negligibly_better": (8, 11)}
    batch = collate_pairs([example(c, r, s) for s, (c, r) in scores.items()])
    plain = RewardRecipe(parse_config(RewardConfig, settings)).loss(LastTokenScore(), batch)
    centred = RewardRecipe(parse_config(RewardConfig, {**settings, "center_rewards": 0.01})).loss(LastTokenScore(), batch)
    by_hand = sum((c / 10 + r / 10) ** 2 for c, r in scores.values())  # (r_c + r_r)^2 per pair
    assert centred.sums["centring"].item() == pytest.approx(by_hand)
    assert centred.loss_sum.item() == pytest.approx(plain.loss_sum.item() + 0.01 * by_hand)

    # TRL's RewardTrainer.compute_loss on the same rewards and margins (its mean over pairs = our sum / count)
    trl_trainer = pytest.importorskip("trl.trainer.reward_trainer", reason="trl is in the [test] extra")
    rewards = torch.tensor([[c / 10] for c, _ in scores.values()] + [[r / 10] for _, r in scores.values()])

    class Scores(nn.Module):
        def forward(self, **inputs):
            return SimpleNamespace(logits=rewards)

    model = Scores().eval()
    stub = SimpleNamespace(model=model, args=SimpleNamespace(center_rewards_coefficient=0.01), _total_train_tokens=0,
                           _metrics=defaultdict(lambda: defaultdict(list)),
                           accelerator=SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x))
    margins = torch.tensor([MARGINS["small"][s] for s in scores])
    trl_loss = trl_trainer.RewardTrainer.compute_loss(stub, model, {"margin": margins})
    assert trl_loss.item() == pytest.approx(centred.loss_sum.item() / centred.count, rel=1e-6)


# ---------------------------------------------------------------------------------------------- training


def test_accuracy_on_an_easy_held_out_signal_rises_above_90_percent(tmp_path, tiny_checkpoint, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", word_pairs(TEMPLATES[:60]))
    held_out = write_jsonl(tmp_path / "val.jsonl", word_pairs(TEMPLATES[60:]))
    code, out = run_reward(tmp_path, tiny_checkpoint, train, f"val_data={held_out}", "max_steps=30", "batch_size=8",
                           "eval_every=30", "eval_batches=5", "log_every=30", "margin=none")
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["val_accuracy"] > 0.9
    pairs = read_preferences(held_out)
    trained = reward_report(pairs, *score_pairs(RewardModel.from_pretrained(out / "model", device="cpu"), pairs))
    assert trained.average.interval.estimate > 0.9
    args = read_model_args(tiny_checkpoint)
    untrained = RewardTransformer(args)
    untrained.load_state_dict(initial_reward_state(tiny_checkpoint, args, generator=torch.Generator().manual_seed(0)))
    tokenizer = llama2.Tokenizer(tiny_checkpoint / "tokenizer.model")
    before = reward_report(pairs, *score_pairs(RewardModel(untrained, tokenizer), pairs))
    assert before.average.interval.estimate < 0.75  # it rose: the head and body had to learn it


def test_centring_brings_the_scores_near_zero(tmp_path, tiny_checkpoint, pairs_file):
    """The ranking loss cannot see a shift of every score; with a head started off centre, a few steps of
    the centring term bring the mean score near 0, and without it the mean stays far off."""
    pairs = read_preferences(pairs_file)
    means = {}
    for coefficient in (0.0, 0.5):
        init = tmp_path / f"shifted-{coefficient}"
        args = read_model_args(tiny_checkpoint)
        model = RewardTransformer(args)
        model.load_state_dict(initial_reward_state(tiny_checkpoint, args, generator=torch.Generator().manual_seed(0)))
        rm = RewardModel(model, llama2.Tokenizer(tiny_checkpoint / "tokenizer.model"))
        hidden: list[torch.Tensor] = []  # the head reads the final norm's output: shift it along their mean
        hook = model.norm.register_forward_hook(lambda module, args, out: hidden.append(out.detach().flatten(0, -2)))
        score_pairs(rm, pairs)
        hook.remove()
        mean = torch.cat(hidden).mean(0)
        with torch.no_grad():
            model.reward_head.weight += 8 * mean / mean.square().sum()
        before = score_pairs(rm, pairs)
        assert sum(map(sum, before)) / (2 * len(pairs)) > 4  # started well off centre
        rm.save(init)
        code, out = run_reward(tmp_path / str(coefficient), init, pairs_file, "max_steps=12", "lr=3e-3",
                               f"center_rewards={coefficient}", "margin=none")
        assert code == 0
        chosen, rejected = score_pairs(RewardModel.from_pretrained(out / "model", device="cpu"), pairs)
        means[coefficient] = (sum(chosen) + sum(rejected)) / (2 * len(pairs))
    assert abs(means[0.5]) < 1.0 < abs(means[0.0])


def test_two_steps_of_full_training_change_the_weights_and_leave_a_reward_model(tmp_path, tiny_checkpoint, pairs_file, capsys):
    code, out = run_reward(tmp_path, tiny_checkpoint, pairs_file, "safety_aux_weight=1", "val_fraction=0.25",
                           "eval_every=2", "eval_batches=1")
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert all(math.isfinite(metrics[k]) for k in ("loss", "accuracy", "safety_aux", "val_loss", "val_accuracy"))
    _, base = load_state(tiny_checkpoint)
    trained = torch.load(out / "model" / "consolidated.00.pth", weights_only=True)
    assert set(trained) == (set(base) - {"output.weight"}) | {HEAD}
    assert not torch.equal(trained["layers.0.attention.wq.weight"], base["layers.0.attention.wq.weight"].float())
    initial = initial_reward_state(tiny_checkpoint, read_model_args(tiny_checkpoint), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(initial[HEAD], trained[HEAD])  # the seed's head, trained
    info = json.loads((out / "model" / "reward_model.json").read_text())
    assert (info["margin"], info["safety_aux_weight"]) == ("small", 1.0)
    checkpoint = RewardModel.from_pretrained(out / "checkpoints" / "step-00000002", device="cpu")  # checkpoints load too
    final = RewardModel.from_pretrained(out / "model", device="cpu")
    assert checkpoint.score("Say yes.", "yes") == final.score("Say yes.", "yes")


def test_lora_trains_the_adapters_and_the_head_and_merges(tmp_path, tiny_checkpoint, pairs_file, capsys):
    code, out = run_reward(tmp_path, tiny_checkpoint, pairs_file, "lora.r=4", "lora.targets=wq,wv")
    assert code == 0
    saved = torch.load(out / "checkpoints" / "step-00000002" / "consolidated.00.pth", weights_only=True)
    _, base = load_state(tiny_checkpoint)
    assert all(torch.equal(saved[k], base[k].float()) for k in base if k != "output.weight")  # the body stayed frozen
    assert any(k.endswith("lora_B") and saved[k].abs().sum() > 0 for k in saved)
    initial = initial_reward_state(tiny_checkpoint, read_model_args(tiny_checkpoint), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(saved[HEAD], initial[HEAD])  # the new head trains besides the adapters
    with pytest.raises(CheckpointError, match="holds LoRA adapters, not merged weights"):
        RewardModel.from_pretrained(out / "checkpoints" / "step-00000002", device="cpu")
    merged = torch.load(out / "model" / "consolidated.00.pth", weights_only=True)
    assert not any("lora_" in k for k in merged)
    assert not torch.equal(merged["layers.0.attention.wq.weight"], base["layers.0.attention.wq.weight"].float())
    rm = RewardModel.from_pretrained(out / "model", device="cpu")
    assert rm.score("Say no.", "no") == rm.score([{"role": "user", "content": "Say no."}], "no")


def test_bad_data_fails_before_training_with_file_and_line(tmp_path, tiny_checkpoint, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"prompt": "Say yes.", "chosen": "yes", "rejected": "no"},
        {"prompt": "Say no.", "chosen": "no", "rejected": "yes", "strength": "much_better"},
    ])
    code, out = run_reward(tmp_path, tiny_checkpoint, bad)
    assert code == 1
    assert f"{bad}:2: field 'strength' is 'much_better'" in capsys.readouterr().err
    assert not (out / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------- RewardModel


@pytest.fixture
def reward_folder(tmp_path, tiny_checkpoint) -> Path:
    args = read_model_args(tiny_checkpoint)
    model = RewardTransformer(args)
    model.load_state_dict(initial_reward_state(tiny_checkpoint, args, generator=torch.Generator().manual_seed(1)))
    return RewardModel(model, llama2.Tokenizer(tiny_checkpoint / "tokenizer.model")).save(tmp_path / "rm")


def test_score_batch_agrees_with_score_whatever_the_padding(reward_folder):
    rm = llama2.RewardModel.from_pretrained(reward_folder, device="cpu")
    prompts = ["Say yes.", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say no."}],
               [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Name a fox."}],
               "Once upon a time there was a little robot who loved to read books."]
    responses = ["yes", "no, really not, never", "The quick brown fox.", "The end."]
    alone = [rm.score(p, r) for p, r in zip(prompts, responses)]
    assert len(set(alone)) == 4
    for batch_size in (1, 2, 4):
        assert rm.score_batch(prompts, responses, batch_size=batch_size) == pytest.approx(alone, abs=1e-5)


def test_save_then_load_gives_identical_scores(reward_folder, tmp_path):
    rm = RewardModel.from_pretrained(reward_folder, device="cpu")
    again = RewardModel.from_pretrained(rm.save(tmp_path / "copy"), device="cpu")
    prompts, responses = ["Say yes.", "Say no."], ["yes", "no"]
    assert again.score_batch(prompts, responses) == rm.score_batch(prompts, responses)
    assert json.loads((tmp_path / "copy" / "reward_model.json").read_text())["format"] == "llama2-reward-model/1"
    half = RewardModel.from_pretrained(reward_folder, dtype="bfloat16", device="cpu")
    assert half.model.reward_head.weight.dtype == torch.bfloat16
    assert half.score("Say yes.", "yes") == pytest.approx(rm.score("Say yes.", "yes"), abs=0.1)


def test_a_language_model_is_not_a_reward_model(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not a reward model folder"):
        RewardModel.from_pretrained(tiny_checkpoint, device="cpu")


def test_long_inputs_and_mismatched_lists_are_refused(reward_folder):
    rm = RewardModel.from_pretrained(reward_folder, device="cpu")
    with pytest.raises(llama2.errors.DataError, match="2 prompts but 1 responses"):
        rm.score_batch(["a", "b"], ["c"])
    with pytest.raises(llama2.errors.DataError, match="prompt 0 with its response is .* more than the model's max_seq_len 256"):
        rm.score("word " * 300, "x")
    with pytest.raises(llama2.errors.DataError, match="prompt 0: message 0: .*'assistant'"):
        rm.score([{"role": "assistant", "content": "hi"}], "x")


# ---------------------------------------------------------------------------------------------- recipes


@pytest.mark.parametrize("name", ["reward-tiny", "reward-safety-tiny", "reward-helpfulness-7b", "reward-safety-7b"])
def test_shipped_recipes_are_valid(name, tmp_path, pairs_file, tiny_checkpoint):
    """Each recipe passes validation once its data exists; the paper sizes carry the paper's settings."""
    raw = load_raw(name)
    overrides = [f"output_dir={tmp_path}", f"data={pairs_file}", f"val_data={pairs_file}"]
    if "7b" in name:
        overrides += [f"init={tiny_checkpoint}", "seq_len=256"]  # the test model's window; the recipe's is 4096
    config = load_config(RewardConfig, REPO / "recipes" / f"{name}.yaml", overrides, world_size=8)
    assert isinstance(raw["data"], list) and len(raw["data"]) >= 2  # a mix, with weights
    if "7b" in name:
        assert raw["seq_len"] == 4096 and raw["dtype"] == "bfloat16"
        schedule = (config.lr, config.epochs, config.min_lr_ratio, config.warmup_ratio, config.warmup_steps)
        assert schedule == (1e-5, 1, 0.1, 0.03, 5)
        assert config.batch_size * config.grad_accum * 8 == 512  # pairs per step
    assert (config.safety_aux_weight > 0) == ("safety" in name)
    assert config.center_rewards == 0.01  # ours, beyond the paper (README: Reward models and DPO)
    assert RewardConfig.center_rewards == 0.0  # off unless a recipe asks: the paper has no such term


def load_raw(name: str) -> dict:
    from llama2.train.config import read_recipe

    return read_recipe(REPO / "recipes" / f"{name}.yaml")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_checkpoint, pairs_file):
    """Under FSDP on 2 CPU processes (the scalar head in the root unit) each step equals one process's
    on the same global batch, and the gathered checkpoint is a reward model folder."""
    common = [f"init={tiny_checkpoint}", f"data={pairs_file}", "max_steps=3", "lr=1e-3", "log_every=1",
              "tensorboard=false", "device=cpu", "dtype=float32", "min_lr_ratio=1.0", "safety_aux_weight=0.5"]
    assert main(["train", "reward", *common, f"output_dir={tmp_path / 'single'}", "batch_size=4"]) == 0
    train_on_two_processes("reward", [*common, f"output_dir={tmp_path / 'fsdp'}", "batch_size=2"])
    single, sharded = ([json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
                       for name in ("single", "fsdp"))
    for got, want in zip(sharded, single, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-4)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-3)
    rm = RewardModel.from_pretrained(tmp_path / "fsdp" / "model", device="cpu")
    assert rm.score("Say yes.", "yes") == pytest.approx(
        RewardModel.from_pretrained(tmp_path / "single" / "model", device="cpu").score("Say yes.", "yes"), abs=1e-3)
