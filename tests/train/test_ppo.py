"""PPO (LLAMA2.md §5.2): the combined reward rule on hand cases; whitening gives zero mean and unit
variance, and the vector option an identity covariance; GAE, the shaped rewards and the clipped
losses equal hand computations; on a toy reward PPO raises the mean reward while the KL to π0 stays
near its target; early stopping on held-out prompts, exporting the best evaluation's policy (or the
last); exact resume; two-step smoke runs (full, LoRA,
vector whitening) and the shipped recipes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llama2.cli.main import main
from llama2.errors import ConfigError
from llama2.model.checkpoint import load_transformer
from llama2.train.config import load_config, parse_config
from llama2.train.distributed import Runtime
from llama2.train.loop import train
from llama2.train.ppo_math import RunningMoments, adaptive_beta, gae, masked_mean, policy_loss, shaped_rewards, value_loss
from llama2.train.recipes.ppo import PPO, PPOConfig
from llama2.train.rewards import RewardFunction, combined_scores

from .rlhf_helpers import PROMPTS, UNSAFE, ScriptedScorer, count_word, reward_folder, stopping_checkpoint, weights, write_prompts
from .torchrun import train_on_two_processes

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- rewards


def test_the_combined_reward_rule_on_hand_cases():
    helpful = torch.tensor([1.0, 2.0, 3.0, 0.5])
    safety = torch.tensor([0.0, -2.0, 5.0, -1.0])  # σ: 0.5, 0.12 (< 0.15: unsafe), 0.99, 0.27
    tagged = torch.tensor([False, False, True, False])
    assert combined_scores(helpful, safety, tagged).tolist() == [1.0, -2.0, 5.0, 0.5]
    # The paper's rule in probabilities, R = σ(score): LOGIT(R_c) is the chosen model's score.
    r_h, r_s = torch.sigmoid(helpful), torch.sigmoid(safety)
    r_c = torch.where(tagged | (r_s < 0.15), r_s, r_h)
    assert combined_scores(helpful, safety, tagged) == pytest.approx(torch.logit(r_c), abs=1e-5)
    assert combined_scores(helpful, safety, tagged, threshold=0.3).tolist() == [1.0, -2.0, 5.0, -1.0]

    rewards = RewardFunction(ScriptedScorer(lambda p, r: len(r)), ScriptedScorer(lambda p, r: -5.0 if "bomb" in r else 1.0))
    scores = rewards(["q1", "q2", "q3"], ["a bomb", "hello", "hi"], [False, False, True])
    assert scores.helpful.tolist() == [6.0, 5.0, 2.0] and scores.combined.tolist() == [-5.0, 5.0, 1.0]
    alone = RewardFunction(ScriptedScorer(lambda p, r: len(r)))("q", ["abc"], [True])
    assert alone.safety is None and alone.combined.tolist() == [3.0]  # no safety scorer: helpfulness for all


# ---------------------------------------------------------------------------------------------- whitening


def test_whitening_by_running_statistics_gives_zero_mean_and_unit_variance():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3 + 5
    moments = RunningMoments(1)
    for part in x.split(300):  # merged batch by batch
        moments.update(part)
    assert moments.mean.item() == pytest.approx(x.double().mean().item(), abs=1e-9)
    assert moments.covariance.item() == pytest.approx(x.double().var().item(), abs=1e-9)
    white = moments.whiten(x).double()
    assert white.mean().item() == pytest.approx(0.0, abs=1e-6) and white.std().item() == pytest.approx(1.0, abs=1e-6)
    again = RunningMoments(1)
    again.load_state_dict(json.loads(json.dumps(moments.state_dict())))
    assert torch.equal(again.whiten(x), moments.whiten(x))
    constant = RunningMoments(1)
    constant.update(torch.full((4,), 2.5))
    assert constant.whiten(torch.full((4,), 2.5)).abs().max() == 0.0  # no division by zero


def test_vector_whitening_gives_an_identity_covariance_and_keeps_each_score_closest_to_itself():
    rng = torch.Generator().manual_seed(1)
    latent = torch.randn(5000, 2, generator=rng, dtype=torch.float64)
    x = latent @ torch.tensor([[2.0, 1.5], [0.0, 0.5]], dtype=torch.float64) + torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert np.corrcoef(x.T.numpy())[0, 1] > 0.9  # helpfulness and safety strongly correlated
    moments = RunningMoments(2)
    moments.update(x[:2000])
    moments.update_sums(3000, x[2000:].sum(0), x[2000:].T @ x[2000:])
    white = moments.whiten(x)
    assert white.mean(0).abs().max().item() < 1e-9
    assert np.cov(white.T.numpy()) == pytest.approx(np.eye(2), abs=1e-6)
    matrix = moments.whitening_matrix()
    assert torch.allclose(matrix, matrix.T)  # ZCA: symmetric, so no rotation mixes the two scores
    assert all(np.corrcoef(white[:, i], x[:, i])[0, 1] > 0.5 for i in range(2))


# ---------------------------------------------------------------------------------------------- PPO arithmetic


def test_gae_equals_a_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 0: δ = (-0.32, -0.11, 0.9); A_2 = 0.9, A_1 = -0.11 + 0.72 * 0.9, A_0 = -0.32 + 0.72 * A_1.
    # Row 1 ends at t = 1 (its value and reward past the end do not count): δ = (0.06, 1.6).
    want = torch.tensor([[0.06736, 0.538, 0.9], [1.212, 1.6, 0.0]])
    assert advantages == pytest.approx(want, abs=1e-6)
    assert returns == pytest.approx(want + torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 0.0]]), abs=1e-6)
    # The same from the definition A_t = Σ_l (γλ)^l δ_{t+l}, on a random batch.
    r, v = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)), torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    a, _ = gae(r, v, torch.ones(4, 6), gamma=0.97, lam=0.9)
    delta = r + 0.97 * torch.cat([v[:, 1:], torch.zeros(4, 1)], 1) - v
    by_definition = torch.stack([sum((0.97 * 0.9) ** l * delta[:, t + l] for l in range(6 - t)) for t in range(6)], 1)
    assert a == pytest.approx(by_definition, abs=1e-5)


def test_shaped_rewards_per_token_and_per_sequence():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, -0.1, 0.7]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    token = shaped_rewards(scores, kl, mask, beta=0.5, kl_mode="token")
    assert token == pytest.approx(torch.tensor([[-0.05, -0.1, 1.85], [-0.25, -0.95, 0.0]]), abs=1e-6)
    sequence = shaped_rewards(scores, kl, mask, beta=0.5, kl_mode="sequence")
    assert sequence == pytest.approx(torch.tensor([[0.0, 0.0, 1.7], [0.0, -1.2, 0.0]]), abs=1e-6)
    assert token.sum(1) == pytest.approx(sequence.sum(1), abs=1e-6)  # the same total, credited differently


def test_clipped_losses_and_the_kl_controller_on_hand_cases():
    logprobs = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    loss, clipped = policy_loss(logprobs, torch.zeros(1, 3), torch.tensor([[1.0, -1.0, 1.0]]), clip=0.2)
    assert loss == pytest.approx(torch.tensor([[-1.2, 1.5, -0.5]]), abs=1e-6)
    assert clipped.tolist() == [[True, False, False]]
    values = value_loss(torch.tensor([1.0, 0.1]), torch.zeros(2), torch.tensor([0.0, 1.0]), clip=0.2)
    assert values == pytest.approx(torch.tensor([0.5, 0.405]), abs=1e-6)
    assert masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]]), dim=1).tolist() == [2.0]
    assert adaptive_beta(0.1, 3.0, target=2.0, steps=16, horizon=16) == pytest.approx(0.12)
    assert adaptive_beta(0.1, 1.0, target=2.0, steps=8, horizon=16) == pytest.approx(0.09)


# ---------------------------------------------------------------------------------------------- training


def ppo_settings(tmp_path: Path, model: Path, data: Path, **changes) -> dict:
    settings = {"init": str(model), "data": str(data), "output_dir": str(tmp_path / "run"), "iterations": 1,
                "rollout_batch_size": 4, "batch_size": 2, "max_new_tokens": 8, "seq_len": 64, "lr": 3e-3,
                "log_every": 1, "tensorboard": False, "device": "cpu", "dtype": "float32"}
    settings.update(changes)
    return settings


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_heads_at_the_answer_positions_only_equal_the_full_forward_picked_there():
    from llama2.model.config import get_preset
    from llama2.train.policy_value import PolicyValueTransformer
    from llama2.train.ppo_batches import pick, response_positions, rows_batch

    model = PolicyValueTransformer(get_preset("tiny"))
    model.init_weights(torch.Generator().manual_seed(0))
    torch.nn.init.normal_(model.value_head.weight, generator=torch.Generator().manual_seed(1))
    batch = rows_batch([([1, 5, 9, 4], [7, 8, 2]), ([1, 3], [6, 6, 6, 6, 2]), ([1, 4, 4, 4, 4, 4], [9])])
    with torch.no_grad():
        logits, values = model(batch["tokens"], values=True)
        picked_logits, picked_values = model(batch["tokens"], values=True, select=response_positions(batch))
    assert picked_logits.shape == (3, 5, model.args.vocab_size)
    torch.testing.assert_close(picked_logits, pick(logits, batch), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(picked_values, pick(values, batch), rtol=1e-6, atol=1e-6)


def test_ppo_raises_a_toy_reward_while_the_kl_to_pi0_stays_near_its_target(tmp_path, tiny_tokenizer_path, capsys):
    """The reward counts the letter o in the answer; β adapts toward a KL target of 2 nats per answer."""
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path, stop=0.0)  # answers run to max_new_tokens
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    config = parse_config(PPOConfig, ppo_settings(tmp_path, model, data, iterations=8, rollout_batch_size=16, batch_size=8,
                                                  ppo_epochs=2, beta=0.05, kl_target=2.0, kl_horizon=16))
    assert config.max_steps == 32 and config.steps_per_iteration(1) == 4
    train(PPO(config, reward=RewardFunction(count_word("o"))))
    metrics = read_metrics(tmp_path / "run")
    reward = [np.mean([m["reward"] for m in metrics[i * 4:(i + 1) * 4]]) for i in range(8)]
    kl = [np.mean([m["kl"] for m in metrics[i * 4:(i + 1) * 4]]) for i in range(8)]
    assert abs(kl[0]) < 1e-5  # the first answers come from π0 itself (π_old from the cached decode: rounding only)
    assert np.mean(reward[-2:]) > 1.5 * np.mean(reward[:2])
    assert max(kl) < 6.0 and 0.5 < np.mean(kl[-3:]) < 4.0
    betas = [m["beta"] for m in metrics[::4]]
    assert betas[1] < betas[0] and betas[-1] > min(betas)  # β falls while the KL is under target, then rises
    assert all(math.isfinite(m["loss"]) for m in metrics)


def test_log_probs_and_values_from_the_sampling_pass_equal_a_recomputing_forward(tmp_path, tiny_tokenizer_path):
    """`rollout_scores: sampler` reads π_old and V from the hidden states the engine sampled from;
    `recompute` runs the policy over the finished answers. Same answers, same numbers to rounding."""
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path, stop=0.3)  # answers of mixed lengths
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    recipes = {}
    for mode in ("sampler", "recompute"):
        config = parse_config(PPOConfig, ppo_settings(tmp_path / mode, model, data, value_init="normal", rollout_scores=mode))
        recipes[mode] = PPO(config, reward=RewardFunction(count_word("o")))
        train(recipes[mode])
    sampled, recomputed = recipes["sampler"].buffer, recipes["recompute"].buffer
    assert [r.response for r in sampled] == [r.response for r in recomputed]
    assert len({len(r.response) for r in sampled}) > 1 and any(r.response[-1] == 2 for r in sampled)  # some end on EOS
    for a, b in zip(sampled, recomputed):
        torch.testing.assert_close(a.old_logprobs, b.old_logprobs, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.old_values, b.old_values, rtol=0, atol=1e-5)
    cpu = Runtime(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    auto = {dtype: PPO(parse_config(PPOConfig, ppo_settings(tmp_path, model, data, dtype=dtype)),
                       reward=RewardFunction(count_word("o")))._scores_from_sampler(cpu)
            for dtype in ("float32", "bfloat16")}
    assert auto == {"float32": True, "bfloat16": False}  # `auto`: the sampler's numbers only in fp32


def test_two_steps_through_the_cli_change_the_weights_and_leave_a_plain_model(tmp_path, tiny_tokenizer_path, capsys):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    unsafe = write_prompts(tmp_path / "unsafe.jsonl", UNSAFE)
    out = tmp_path / "run"
    argv = ["train", "ppo", f"init={model}", f"data={data}", f"safety_data={unsafe}", f"reward_model={rm}",
            f"safety_reward_model={rm}", f"output_dir={out}", "rollout_batch_size=4", "batch_size=2", "max_new_tokens=8",
            "seq_len=64", "lr=1e-3", "log_every=1", "tensorboard=false", "device=cpu", "dtype=float32", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 2 and math.isfinite(summary["metrics"]["loss"])
    rollouts = [json.loads(line) for line in (out / "ppo" / "rollouts" / "iteration-000000.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and all(abs(r["kl"]) < 1e-5 for r in rollouts)  # π_θ = π_0 before the first update
    for r in rollouts:
        assert r["reward"] == (r["safety_score"] if r["safety"] or r["safety_score"] < math.log(0.15 / 0.85) else r["helpful"])
    trained = load_transformer(out / "model")  # the policy alone: a plain checkpoint
    start = weights(model)
    assert any(not torch.equal(start[k], v) for k, v in trained.state_dict().items())
    assert "value_head.weight" in weights(out / "checkpoints" / "step-00000002")


def test_lora_trains_adapters_and_value_head_against_the_base_as_pi0(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    config = parse_config(PPOConfig, ppo_settings(tmp_path, model, data, iterations=2, lora={"r": 4, "targets": ["wq", "wv", "output"]}))
    recipe = PPO(config, reward=RewardFunction(count_word("o")))
    result = train(recipe)
    metrics = read_metrics(tmp_path / "run")
    assert abs(metrics[0]["kl"]) < 1e-5 and abs(metrics[-1]["kl"]) > 1e-3  # adapters off = π0; after updates they differ
    state = weights(result.checkpoint)
    assert any(k.endswith("lora_B") and v.abs().sum() > 0 for k, v in state.items())
    assert state["value_head.weight"].abs().sum() > 0
    merged = recipe.finalize(result.checkpoint)
    assert load_transformer(merged).layers[0].attention.wq.weight.shape == (64, 64)


def test_vector_whitening_decorrelates_the_two_scores_before_combining(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    unsafe = write_prompts(tmp_path / "unsafe.jsonl", UNSAFE)
    helpful, safe = ScriptedScorer(lambda p, r: len(r)), ScriptedScorer(lambda p, r: 0.5 * len(r) - 3.0 + ("o" in r))
    config = parse_config(PPOConfig, ppo_settings(tmp_path, model, data, safety_data=str(unsafe), whiten="vector",
                                                  rollout_batch_size=8, batch_size=4))
    train(PPO(config, reward=RewardFunction(helpful, safe)))
    rows = [json.loads(line) for line in (tmp_path / "run" / "ppo" / "rollouts" / "iteration-000000.jsonl").read_text().splitlines()]
    pairs = torch.tensor([[r["helpful"], r["safety_score"]] for r in rows], dtype=torch.float64)
    moments = RunningMoments(2)
    moments.update(pairs)
    white = moments.whiten(pairs)
    for r, w in zip(rows, white):
        use_safety = r["safety"] or r["safety_score"] < math.log(0.15 / 0.85)
        assert r["whitened"] == pytest.approx(float(w[1] if use_safety else w[0]), abs=1e-5)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_early_stopping_on_held_out_prompts_ends_the_run_without_moving_the_weights(keep, tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    heldout = write_prompts(tmp_path / "heldout.jsonl", [{"id": "h1", "prompt": "HELDOUT one"}, {"id": "h2", "prompt": "HELDOUT two"}])
    calls = []

    def score(prompt, response):  # held-out answers score worse at every evaluation
        if "HELDOUT" in json.dumps(prompt):
            calls.append(1)
            return -float(len(calls))
        return response.count("o")

    settings = ppo_settings(tmp_path, model, data, iterations=6, rollout_batch_size=2, batch_size=2, val_data=str(heldout),
                            eval_every=1, patience=1, save_every=1, keep_last=5, keep=keep)
    (tmp_path / "run" / "ppo" / "best").mkdir(parents=True)  # an earlier run's leftover: a fresh run drops it
    (tmp_path / "run" / "ppo" / "best" / "best.json").write_text('{"step": 9, "val_reward": 99.0}')
    recipe = PPO(parse_config(PPOConfig, settings), reward=RewardFunction(ScriptedScorer(score)))
    recipe.finalize(train(recipe).checkpoint)  # as `llama2 train ppo` does
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2, 3]  # evaluated after steps 1 and 2; stopped at step 3
    assert metrics[0]["val_reward"] > metrics[1]["val_reward"]
    checkpoints = tmp_path / "run" / "checkpoints"
    before, after = weights(checkpoints / "step-00000002"), weights(checkpoints / "step-00000003")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the stopping step moves nothing
    assert json.loads((tmp_path / "run" / "ppo" / "stopped.json").read_text())["step"] == 3

    def exported_step() -> int:  # which checkpoint's policy OUTPUT_DIR/model is
        model = weights(tmp_path / "run" / "model")
        same = [step for step in (1, 2) if all(torch.equal(model[k], weights(checkpoints / f"step-0000000{step}")[k])
                                                   for k in model)]
        assert len(same) == 1 and not any(k.startswith("value_head") for k in model)
        return same[0]

    best = tmp_path / "run" / "ppo" / "best" / "best.json"
    assert exported_step() == (1 if keep == "best" else 2)  # the first evaluation was the best
    assert json.loads(best.read_text()) == {"step": 1, "val_reward": metrics[0]["val_reward"]} if keep == "best" \
        else not best.exists()
    recipe = PPO(parse_config(PPOConfig, settings), reward=RewardFunction(ScriptedScorer(score)))
    again = train(recipe)
    assert again.step == 3 and len(read_metrics(tmp_path / "run")) == 3  # a re-run does not go on
    recipe.finalize(again.checkpoint)
    assert exported_step() == (1 if keep == "best" else 2)


def test_resuming_between_iterations_continues_exactly(tmp_path, tiny_tokenizer_path):
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)

    def run(folder: str, iterations: int):
        # One matmul for both runs: under `auto` each fresh run times oneDNN against MKL and may choose
        # differently, and a product that differs by summation order can flip a sampled token.
        settings = ppo_settings(tmp_path, model, data, output_dir=str(tmp_path / folder), iterations=iterations, save_every=2,
                                kl_target=1.0, kl_horizon=8, cpu_kernels="torch")
        return train(PPO(parse_config(PPOConfig, settings), reward=RewardFunction(count_word("o"))))

    straight = run("straight", 3)
    run("resumed", 2)
    resumed = run("resumed", 3)
    assert resumed.step == straight.step == 6
    a, b = weights(straight.checkpoint), weights(resumed.checkpoint)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_batch_settings_and_keys_are_checked_whole(tmp_path, tiny_checkpoint):
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    with pytest.raises(ConfigError) as error:
        parse_config(PPOConfig, ppo_settings(tmp_path, tiny_checkpoint, data, rollout_batch_size=6, batch_size=4, epochs=1,
                                             patience=2, gamma=1.5, whiten="vector", reward_model=str(tmp_path)))
    message = str(error.value)
    for part in ("rollout_batch_size 6 must be a positive multiple of the mini-batch", "set iterations", "patience counts",
                 "gamma and lam", "is not a reward model folder"):
        assert part in message
    resolved = parse_config(PPOConfig, ppo_settings(tmp_path, tiny_checkpoint, data, iterations=3))
    assert parse_config(PPOConfig, resolved.to_dict()).max_steps == 6  # what --dry-run prints reads back
    with pytest.raises(ConfigError, match="save_every must be a multiple of the 2 steps"):
        parse_config(PPOConfig, ppo_settings(tmp_path, tiny_checkpoint, data, save_every=3))
    with pytest.raises(ConfigError, match="PPO needs a reward model"):
        PPO(parse_config(PPOConfig, ppo_settings(tmp_path, tiny_checkpoint, data)))


@pytest.mark.parametrize(("name", "beta"), [("ppo-tiny", 0.01), ("ppo-7b", 0.01), ("ppo-70b", 0.005)])
def test_shipped_recipes_carry_the_papers_settings(name, beta, tmp_path, tiny_checkpoint, tiny_tokenizer_path):
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    overrides = [f"output_dir={tmp_path}", f"data={data}", f"safety_data={data}", f"val_data={data}", f"init={tiny_checkpoint}",
                 f"reward_model={rm}", f"safety_reward_model={rm}", "seq_len=256", "max_new_tokens=64"]
    world = 1 if name == "ppo-tiny" else 8
    config = load_config(PPOConfig, REPO / "recipes" / f"{name}.yaml", overrides, world_size=world)
    assert (config.beta, config.clip, config.safety_threshold) == (beta, 0.2, 0.15)
    if name != "ppo-tiny":
        assert (config.lr, config.min_lr_ratio, config.warmup_steps) == (1e-6, 1.0, 0)  # constant 1e-6
        assert (config.rollout_batch_size, config.minibatch(world)) == (512, 64)  # batch 512, mini-batch 64
        assert config.steps_per_iteration(world) == 8 and 200 <= config.iterations <= 400
        assert (config.betas, config.eps, config.weight_decay, config.grad_clip) == ((0.9, 0.95), 1e-5, 0.1, 1.0)


@pytest.mark.slow
def test_fsdp_samples_from_gathered_weights_like_one_process(tmp_path, tiny_tokenizer_path):
    """Under FSDP on 2 processes each rank samples its share from a full copy of the policy: the first
    iteration's answers and rewards equal a single process's."""
    model = stopping_checkpoint(tmp_path / "model", tiny_tokenizer_path)
    rm = reward_folder(tmp_path / "rm", tiny_tokenizer_path)
    data = write_prompts(tmp_path / "prompts.jsonl", PROMPTS)
    settings = ppo_settings(tmp_path, model, data, reward_model=str(rm), rollout_batch_size=4, batch_size=1, iterations=2)
    train(PPO(parse_config(PPOConfig, {**settings, "output_dir": str(tmp_path / "single"), "batch_size": 2})))
    train_on_two_processes("ppo", [f"{k}={v}" for k, v in {**settings, "output_dir": str(tmp_path / "fsdp")}.items()],
                           timeout=600)
    for iteration in ("iteration-000000.jsonl",):
        single, sharded = ((tmp_path / d / "ppo" / "rollouts" / iteration).read_text().splitlines() for d in ("single", "fsdp"))
        assert [json.loads(x)["response"] for x in single] == [json.loads(x)["response"] for x in sharded]
        assert [json.loads(x)["reward"] for x in single] == pytest.approx([json.loads(x)["reward"] for x in sharded], abs=1e-5)
    assert load_transformer(tmp_path / "fsdp" / "model").args.n_layers == 2
    assert all(math.isfinite(m["loss"]) for m in read_metrics(tmp_path / "fsdp"))
