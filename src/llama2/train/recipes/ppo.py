"""PPO for Llama 2-Chat (Llama 2 §3.2.3; LLAMA2.md §5.2) on the one loop: `llama2 train ppo`.

Objective `argmax_π E[R(g|p)]`, `R(g|p) = R̃_c(g|p) - β D_KL(π_θ(g|p) ‖ π_0(g|p))`: the policy starts
from `init`, π_0 is `init` frozen (with LoRA: the same model with its adapters switched off, no
second copy), `R_c = R_s if is_safety(p) or R_s < 0.15 else R_h` (`train.rewards`: prompts of
`safety_data` are tagged), and `R̃_c = WHITEN(LOGIT(R_c))` with running statistics (`whiten: scalar`;
`vector` whitens the (helpfulness, safety) score pair with ZCA before combining — it decorrelates
them as well as centring and scaling each; `none` uses the raw score).

One PPO iteration: `rollout_batch_size` prompts (512 in the paper) are answered by the current
policy through the one engine (`rollouts.policy_for_sampling`: in one process the model itself;
under FSDP a full copy gathered on every rank, the paper's 20x fix), scored, and turned into per-token
rewards (`ppo_math.shaped_rewards`), values and GAE advantages (whitened over the batch); then
`ppo_epochs` passes over them in mini-batches of the loop's global batch (64 in the paper), one
optimizer step each (`policy_loss` with `clip` 0.2, clipped value loss weighted by `vf_coef`). A
loop step is one mini-batch, so `max_steps = iterations * ppo_epochs * rollout_batch_size /
global_batch`. The paper: constant LR 1e-6 (`min_lr_ratio: 1.0`), AdamW (0.9, 0.95, eps 1e-5), wd
0.1, grad clip 1.0, β = 0.01 (7B, 13B) or 0.005 (34B, 70B), 200-400 iterations.

The policy's log-probabilities and values of each answer (π_old of the ratio, V of GAE) come from
the sampling pass itself (`rollout_scores: sampler`): the engine keeps the hidden state each token
was sampled from, and the policy's two heads read them — one forward pass of the policy over the
answers fewer per iteration (about a tenth of an iteration on the ~20M benchmark model). They equal
a fresh forward pass up to the cached decode's rounding (1e-6 in fp32); in a lower precision, or
under FSDP where the sampling copy is cast to the compute dtype, that rounding would show in the first
mini-batch's ratios, so `recompute` runs the policy over the finished answers instead, as most PPO
implementations do. `auto` (the default) is `sampler` in fp32 and `recompute` otherwise.

What the paper leaves open, as keys with our defaults: the KL per token (`kl: token`, each token
pays its own `log π - log π0`) or per sequence (`kl: sequence`, the summed KL paid at the end);
GAE `gamma: 1.0`, `lam: 0.95` (undiscounted episodes of one answer, as InstructGPT and TRL);
the value head (`policy_value`: on the policy's body, `value_init: zero`); a fixed β, or with
`kl_target` Ziegler et al.'s adaptive controller; each answer weighs the same in the loss (the
per-token losses are averaged within an answer, then over answers).

Early stopping on held-out prompts (`val_data`, or `val_fraction` of `data`): every `eval_every`
steps (a multiple of an iteration's steps) the held-out prompts are answered (fixed seeds) and
scored; `val_reward` is their mean `LOGIT(R_c)` and `val_loss` its negative. After `patience`
evaluations without a new best, the run stops: the next step changes nothing and is the last (the
loop then saves it as usual), and OUTPUT_DIR/ppo/stopped.json keeps a re-run from going on. The
point of stopping early is the best policy, not the last: with `keep: best` (the default) each new
best evaluation's weights are saved to OUTPUT_DIR/ppo/best/ (atomically, with best.json: its step and
val_reward) and OUTPUT_DIR/model is made from them; `keep: last`, or a run without held-out
evaluations, exports the last step's policy. Only evaluated policies compete: a last step that falls
between evaluations is not one of them.

Written: OUTPUT_DIR/ppo/rollouts/iteration-NNNNNN.jsonl (every answer with its scores and KL) and
ppo/state/iteration-NNNNNN.json (running statistics, β and early-stopping state at the start of that
iteration, for exact resume; checkpoints fall on iteration boundaries: `save_every` is a multiple of
an iteration's steps). Checkpoints (and ppo/best/) hold the value head too; OUTPUT_DIR/model is the
policy alone, an ordinary checkpoint (LoRA merged).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llama2.atomic import atomic_folder, write_text
from llama2.data.rl_prompts import RLPrompt, mix_prompts
from llama2.errors import CheckpointError, ConfigError, DataError
from llama2.generation.engine import Engine
from llama2.model.checkpoint import save_meta
from llama2.model.tokenizer import Tokenizer
from llama2.model.transformer import Transformer
from llama2.train.checkpointing import full_model_state, load_model_state
from llama2.train.distributed import Runtime, all_reduce_sum, shard_model
from llama2.train.lora import lora_modules
from llama2.train.loop import LossOutput, compute_dtype, to_device
from llama2.train.policy_value import PolicyValueTransformer, initial_value_head, policy_state
from llama2.train.ppo_batches import (
    Rollout,
    collate,
    global_mean,
    padded,
    pick,
    reduce_device,
    response_positions,
    rows_batch,
    token_logprobs,
    whiten_masked,
)
from llama2.train.ppo_math import RunningMoments, adaptive_beta, gae, masked_mean, policy_loss, shaped_rewards, value_loss
from llama2.train.recipes.finetune import FINAL_DIR, WEIGHTS_FILE, FinetuneRecipe, split_off
from llama2.train.recipes.ppo_config import PPOConfig
from llama2.train.recipes.sampled_sft import write_jsonl
from llama2.train.rewards import RewardFunction, Rewards, safety_selected
from llama2.train.rollouts import Response, encode_prompts, gather_objects, policy_for_sampling, sample_responses, shard
from llama2.types import SamplingParams

__all__ = ["PPO", "PPOConfig"]

PPO_DIR = "ppo"
STOPPED_FILE = "stopped.json"
BEST_DIR, BEST_FILE = "best", "best.json"  # OUTPUT_DIR/ppo/best/: the best held-out evaluation's weights
_TRAIN, _HELDOUT = 0, 1  # seed-key tags of training rollouts and held-out answers
Scored = tuple[list[torch.Tensor], list[torch.Tensor]]  # per answer: the policy's log-probs and values


class PPO(FinetuneRecipe):
    """The PPO recipe for the one loop (see the module docstring)."""

    Config = PPOConfig
    name = "ppo"
    trainable_modules = ("value_head",)
    config: PPOConfig

    def __init__(self, config: PPOConfig, *, reward: RewardFunction | None = None) -> None:
        """`reward` replaces the config's reward models (a scripted `RewardFunction`, in tests)."""
        super().__init__(config)
        if reward is None and config.reward_model is None:
            raise ConfigError("PPO needs a reward model: set reward_model (a folder from `llama2 train reward`)")
        self.reward = reward
        self.moments = RunningMoments(2 if config.whiten == "vector" else 1)
        self.beta = config.beta
        self.early = {"best": None, "best_step": None, "bad": 0, "stop": False}
        self.buffer: list[Rollout] = []
        self.buffer_iteration: int | None = None
        self.policy: nn.Module | None = None  # the model being trained, as the loop last handed it
        self.reference: nn.Module | None = None

    # ---- data -----------------------------------------------------------------------------------

    def prepare(self, runtime: Runtime) -> None:
        config = self.config
        tokenizer = self.tokenizer = self._open_init()
        prompts = mix_prompts(config.data, seed=config.seed)
        if config.safety_data is not None:
            prompts += mix_prompts(config.safety_data, safety=True, seed=config.seed)
        if config.val_data is not None:
            train, val = prompts, mix_prompts(config.val_data, seed=config.seed, shuffle=False)
        else:
            train, val = split_off(prompts, config.val_fraction, what="prompt(s)")
        self.train_prompts, self.val_prompts = train, val
        self.train_ids, self.val_ids = self._encoded(tokenizer, train), self._encoded(tokenizer, val)
        self.num_train = len(train)
        self.steps_per_iteration = config.steps_per_iteration(runtime.world_size)
        if config.warmup_ratio:
            config.warmup_steps = max(config.warmup_steps, math.ceil(config.warmup_ratio * config.max_steps))
        stopped = self._folder() / STOPPED_FILE
        if stopped.is_file():
            config.max_steps = min(config.max_steps, json.loads(stopped.read_text())["step"])
        if self.reward is None:
            assert config.reward_model is not None  # checked in __init__
            self.reward = RewardFunction.from_paths(config.reward_model, config.safety_reward_model, device=runtime.device,
                                                    threshold=config.safety_threshold, batch_size=config.reward_batch_size)
        if config.whiten == "vector" and self.reward.safety is None:
            raise ConfigError("whiten: vector needs a safety scorer (safety_reward_model) beside the helpfulness one")
        if runtime.is_main:
            print(f"ppo: {len(train)} prompts ({sum(p.safety for p in train)} tagged unsafe), {len(val)} held out; "
                  f"{config.iterations} iterations of {config.rollout_batch_size} answers, {self.steps_per_iteration} "
                  f"steps each", file=sys.stderr, flush=True)

    def _encoded(self, tokenizer: Tokenizer, prompts: list[RLPrompt]) -> list[list[int]]:
        ids = encode_prompts(tokenizer, [p.messages for p in prompts])
        room = self.seq_len - self.config.max_new_tokens
        for prompt, row in zip(prompts, ids):
            if len(row) > room:
                raise DataError(f"prompt {prompt.id} is {len(row)} tokens; with max_new_tokens {self.config.max_new_tokens} "
                                f"it does not fit seq_len {self.seq_len}; shorten it or lower max_new_tokens")
        return ids

    # ---- model ----------------------------------------------------------------------------------

    def _new_model(self) -> nn.Module:
        return PolicyValueTransformer(self.args)

    def _init_state(self) -> dict[str, torch.Tensor]:
        head = initial_value_head(self.args, self.config.value_init, generator=torch.Generator().manual_seed(self.config.seed))
        return {**super()._init_state(), **head}

    def finalize(self, checkpoint: Path) -> Path:
        """OUTPUT_DIR/model: the policy without its value head, a plain checkpoint (LoRA merged in) —
        with `keep: best`, that of the best held-out evaluation (ppo/best/), else `checkpoint`'s."""
        out = Path(self.config.output_dir) / FINAL_DIR
        state = policy_state(self._merged_model(self._kept(checkpoint)).state_dict())
        save_meta(state, self.args, out, tokenizer=self.tokenizer_path, overwrite=True)
        return out

    def _kept(self, checkpoint: Path) -> Path:
        """The folder whose weights become OUTPUT_DIR/model (see `keep` in the module docstring)."""
        best = self._folder() / BEST_DIR
        if self.config.keep != "best" or not (best / BEST_FILE).is_file():
            return checkpoint
        info = json.loads((best / BEST_FILE).read_text())
        print(f"ppo: exporting the policy of step {info['step']} (best held-out reward {info['val_reward']:.4f}), "
              f"not the last step's (keep: best)", file=sys.stderr, flush=True)
        return best

    # ---- batches --------------------------------------------------------------------------------

    def batches(self, step: int, runtime: Runtime, model: nn.Module | None = None) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches of mini-batch `step`; a new iteration's rollouts at its first step."""
        assert model is not None
        self.policy = model
        config = self.config
        iteration, within = divmod(step, self.steps_per_iteration)
        if self.buffer_iteration != iteration and within:
            raise CheckpointError(f"step {step} lies inside PPO iteration {iteration}, whose rollouts are gone; resume from a "
                                  f"checkpoint at an iteration boundary (save_every multiple of {self.steps_per_iteration})")
        if step and self.buffer_iteration is None:  # resuming: what the checkpoint does not hold
            self._load_state(iteration)
        elif not step and runtime.is_main:  # a fresh run: an earlier run's best policy is not ours
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(self._folder() / BEST_DIR)
        if self.early["stop"]:
            return self._stop_now(step, runtime)
        if self.buffer_iteration != iteration:
            self._rollout(iteration, runtime, model)
        epoch, index = divmod(within, self.steps_per_iteration // config.ppo_epochs)
        order = np.random.default_rng([config.seed, iteration, epoch, runtime.rank]).permutation(len(self.buffer))
        per_rank = config.batch_size * config.grad_accum
        picks = order[index * per_rank:(index + 1) * per_rank]
        size = config.batch_size
        return [self._collate(picks[m * size:(m + 1) * size].tolist()) for m in range(config.grad_accum)]

    def _collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate([self.buffer[i] for i in indices])

    # ---- rollouts -------------------------------------------------------------------------------

    def _rollout(self, iteration: int, runtime: Runtime, model: nn.Module) -> None:
        """Sample, score and prepare this rank's answers of `iteration` (LLAMA2.md §5.2)."""
        config = self.config
        numbers = [iteration * config.rollout_batch_size + j for j in shard(config.rollout_batch_size, runtime)]
        picked = [self._example_at(n) for n in numbers]
        prompts = [self.train_prompts[i] for i in picked]
        answers, sampled = self._answer(model, runtime, [self.train_ids[i] for i in picked], numbers, (_TRAIN, iteration),
                                        with_scores=self._scores_from_sampler(runtime))
        scores = self.reward([p.messages for p in prompts], [a.text for a in answers], [p.safety for p in prompts])
        whitened = self._whiten(scores, runtime)
        rows = [(self.train_ids[i], a.tokens) for i, a in zip(picked, answers)]
        logprobs, values, reference = self._score_tokens(model, rows, runtime, sampled)
        mask = padded([torch.ones(len(r)) for _, r in rows]).bool()
        kl = (padded(logprobs) - padded(reference)) * mask
        rewards = shaped_rewards(whitened, kl, mask, beta=self.beta, kl_mode=config.kl)
        advantages, returns = gae(rewards, padded(values), mask, gamma=config.gamma, lam=config.lam)
        if config.whiten_advantages:
            advantages = whiten_masked(advantages, mask, runtime)
        sequence_kl = kl.sum(1)
        self.buffer = [Rollout(list(p), list(r), logprobs[i], values[i], advantages[i, :len(r)], returns[i, :len(r)],
                               float(scores.combined[i]), float(whitened[i]), float(sequence_kl[i]))
                       for i, (p, r) in enumerate(rows)]
        self.buffer_iteration = iteration
        self._log_iteration(iteration, prompts, answers, scores, whitened, sequence_kl, runtime)
        if config.kl_target is not None:
            mean_kl = global_mean(sequence_kl, runtime)
            self.beta = adaptive_beta(self.beta, mean_kl, target=config.kl_target, steps=config.rollout_batch_size,
                                      horizon=config.kl_horizon)
        self._save_state(iteration + 1, runtime)

    def _scores_from_sampler(self, runtime: Runtime) -> bool:
        """Whether π_old and the values come from the sampling pass (see the module docstring)."""
        if self.config.rollout_scores == "auto":
            return compute_dtype(self.config.dtype, runtime.device) == torch.float32
        return self.config.rollout_scores == "sampler"

    def _answer(self, model: nn.Module, runtime: Runtime, prompt_ids: list[list[int]], numbers: list[int],
                key: tuple[int, ...], *, with_scores: bool = False) -> tuple[list[Response], Scored | None]:
        """One answer per prompt from the current policy through the one engine; `with_scores`: also
        each answer's log-probs and values under the policy that sampled it, from its hidden states."""
        config = self.config
        params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p)
        dtype = compute_dtype(config.dtype, runtime.device)
        with policy_for_sampling(model, runtime, lora=self.lora, dtype=dtype) as policy:
            engine = Engine(policy, eos_id=self.tokenizer.eos_id, decode=self.tokenizer.decode,
                            max_batch_size=config.sample_batch_size, keep_hidden_states=with_scores)
            groups = sample_responses(engine, prompt_ids, k=1, params=params, seed_key=(config.seed, *key),
                                      prompt_numbers=numbers)
            answers = [group[0] for group in groups]
            return answers, (self._read_heads(policy, answers) if with_scores else None)

    @torch.no_grad()
    def _read_heads(self, policy: nn.Module, answers: list[Response]) -> Scored:
        """Per answer `(R,)`: the log-probability (at the sampling temperature) of each of its tokens
        and the value of the state that chose it, from the hidden states the engine sampled from."""
        hidden = torch.cat([answer.hidden for answer in answers])
        tokens = torch.tensor([t for answer in answers for t in answer.tokens], device=hidden.device)
        if len(tokens) != len(hidden):
            raise RuntimeError(f"the engine kept {len(hidden)} hidden states for {len(tokens)} answer tokens")
        logits = policy.output(hidden).float() / self.config.temperature
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
        values = policy.value_head(hidden).squeeze(-1).float()
        lengths = [len(answer.tokens) for answer in answers]
        return [t.cpu() for t in logprobs.split(lengths)], [t.cpu() for t in values.split(lengths)]

    def _whiten(self, scores: Rewards, runtime: Runtime) -> torch.Tensor:
        """`WHITEN(LOGIT(R_c))` `(N,)` by running statistics (see the module docstring)."""
        if self.config.whiten == "none":
            return scores.combined
        if self.config.whiten == "scalar":
            values = scores.combined[:, None]
        else:
            values = torch.stack([scores.helpful, scores.safety], dim=1)
        x = values.double()
        packed = torch.cat([torch.tensor([float(len(x))], dtype=torch.float64), x.sum(0), (x.T @ x).reshape(-1)])
        packed = all_reduce_sum(packed.to(reduce_device(runtime)), runtime).cpu()
        dim = values.shape[1]
        self.moments.update_sums(int(packed[0]), packed[1:1 + dim], packed[1 + dim:].reshape(dim, dim))
        white = self.moments.whiten(values).float()
        if dim == 1:
            return white[:, 0]
        chosen = safety_selected(scores.safety, scores.is_safety, threshold=self.config.safety_threshold)
        return torch.where(chosen, white[:, 1], white[:, 0])

    @torch.no_grad()
    def _score_tokens(self, model: nn.Module, rows: list[tuple[list[int], list[int]]], runtime: Runtime,
                      sampled: Scored | None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per answer `(R,)`: log-probs and values under the policy now (`sampled`, when the sampling
        pass gave them), log-probs under π_0."""
        recompute = sampled is None
        logprobs, values = ([], []) if recompute else sampled
        reference = []
        was_training = model.training
        model.eval()
        for start in range(0, len(rows), self.config.batch_size):
            batch = to_device(rows_batch(rows[start:start + self.config.batch_size]), runtime.device)
            select = response_positions(batch)
            with self._autocast(runtime.device):
                if recompute:
                    logits, picked = model(batch["tokens"], values=True, select=select)
                    policy_lp = token_logprobs(logits, batch, self.config.temperature)
                with self._reference_model(model, runtime) as ref:
                    reference_lp = token_logprobs(self._answer_logits(ref, batch, select, runtime), batch,
                                                  self.config.temperature)
            for i, (_, response) in enumerate(rows[start:start + self.config.batch_size]):
                n = len(response)
                reference.append(reference_lp[i, :n].float().cpu())
                if recompute:
                    logprobs.append(policy_lp[i, :n].float().cpu())
                    values.append(picked[i, :n].float().cpu())
        model.train(was_training)
        return logprobs, values, reference

    @contextlib.contextmanager
    def _reference_model(self, model: nn.Module, runtime: Runtime) -> Iterator[nn.Module]:
        """π_0: under LoRA the policy with its adapters switched off; else a frozen copy of `init`."""
        if self.lora is not None:
            adapters = list(lora_modules(model).values())
            scalings = [a.scaling for a in adapters]
            for adapter in adapters:
                adapter.scaling = 0.0
            try:
                yield model
            finally:
                for adapter, scaling in zip(adapters, scalings):
                    adapter.scaling = scaling
            return
        if self.reference is None:
            self.reference = self._frozen_init(runtime)
        yield self.reference

    @staticmethod
    def _answer_logits(model: nn.Module, batch: dict[str, torch.Tensor], select: torch.Tensor,
                       runtime: Runtime) -> torch.Tensor:
        """`(B, T, V)` logits of `model` at the answers' positions `select`, projecting only those
        through the output head (a sharded plain Transformer must go through its whole forward)."""
        if isinstance(model, PolicyValueTransformer):
            return model(batch["tokens"], select=select)
        if runtime.distributed:
            return pick(model(batch["tokens"]), batch)
        hidden = model.hidden_states(batch["tokens"])
        return model.output(hidden.gather(1, select[..., None].expand(-1, -1, hidden.shape[-1]))).float()

    def _frozen_init(self, runtime: Runtime) -> nn.Module:
        """`init` as a plain Transformer on the device, sharded like the policy under FSDP."""
        with torch.device("meta"):
            reference = Transformer(self.args)
        dtype = compute_dtype(self.config.dtype, runtime.device)
        if runtime.distributed:
            shard_model(reference, reference.layers, runtime, param_dtype=dtype if dtype != torch.float32 else None)
        reference.to_empty(device=runtime.device)
        load_model_state(reference, super()._init_state() if runtime.is_main else {}, runtime)
        if not runtime.distributed:
            reference.to(dtype)
        return reference.requires_grad_(False).eval()

    # ---- loss -----------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        """PPO's clipped surrogate plus `vf_coef` x the clipped value loss, averaged over each answer's
        tokens and summed over answers (count: answers); held-out and stop batches have their own."""
        if "heldout_reward" in batch:
            rewards = batch["heldout_reward"]
            return LossOutput(loss_sum=-rewards.sum(), count=rewards.numel(), tokens=0, sums={"reward": rewards.sum()})
        if "stop" in batch:  # early stopping: no gradient reaches any weight, so the optimizer step changes nothing
            return LossOutput(loss_sum=torch.zeros((), device=batch["stop"].device, requires_grad=True), count=0, tokens=0)
        config, mask = self.config, batch["mask"]
        logits, values = model(batch["tokens"], values=True, select=response_positions(batch))
        logprobs = token_logprobs(logits, batch, self.config.temperature)
        pg, clipped = policy_loss(logprobs, batch["old_logprobs"], batch["advantages"], clip=config.clip)
        vf = value_loss(values, batch["old_values"], batch["returns"], clip=config.value_clip)
        per_answer = masked_mean(pg + config.vf_coef * vf, mask, dim=1)
        sums = {"reward": batch["reward"].sum(), "reward_whitened": batch["whitened"].sum(), "kl": batch["kl"].sum(),
                "policy_loss": masked_mean(pg, mask, dim=1).detach().sum(),
                "value_loss": masked_mean(vf, mask, dim=1).detach().sum(),
                "clipfrac": masked_mean(clipped.float(), mask, dim=1).sum(),
                "approx_kl": masked_mean(batch["old_logprobs"] - logprobs.detach(), mask, dim=1).sum(),
                "response_tokens": mask.sum(), "beta": torch.tensor(self.beta * len(mask))}
        return LossOutput(loss_sum=per_answer.sum(), count=len(mask), tokens=batch["tokens"].numel(), sums=sums)

    # ---- held-out prompts and early stopping ----------------------------------------------------

    def eval_batches(self, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """The held-out prompts answered now (this rank's share, fixed seeds), as one batch of their
        `LOGIT(R_c)`; updates the early-stopping state."""
        assert self.policy is not None, "evaluation comes after a training step"
        numbers = list(shard(len(self.val_prompts), runtime))
        prompts = [self.val_prompts[i] for i in numbers]
        answers, _ = self._answer(self.policy, runtime, [self.val_ids[i] for i in numbers], numbers, (_HELDOUT,))
        rewards = self.reward([p.messages for p in prompts], [a.text for a in answers], [p.safety for p in prompts]).combined
        self._early_stopping(global_mean(rewards, runtime), runtime)
        return [{"heldout_reward": rewards}]

    def _early_stopping(self, reward: float, runtime: Runtime) -> None:
        step = (self.buffer_iteration + 1) * self.steps_per_iteration
        early = self.early
        improved = early["best"] is None or reward > early["best"]
        if improved:
            early.update(best=reward, best_step=step, bad=0)
        else:
            early["bad"] += 1
        if improved and self.config.keep == "best":
            self._save_best(step, reward, runtime)
        early["stop"] = bool(self.config.patience) and early["bad"] >= self.config.patience
        if runtime.is_main and early["stop"]:
            print(f"ppo: early stop after step {step}: the held-out reward has not beaten {early['best']:.4f} "
                  f"(step {early['best_step']}) for {early['bad']} evaluations", file=sys.stderr, flush=True)
        self._save_state(self.buffer_iteration + 1, runtime)

    def _save_best(self, step: int, reward: float, runtime: Runtime) -> None:
        """The policy now (the best evaluation so far) to ppo/best/, as a checkpoint holds its weights
        (value head, LoRA unmerged), so that `finalize` can export it (collective under FSDP)."""
        assert self.policy is not None
        state = full_model_state(self.policy, runtime)
        if runtime.is_main:
            with atomic_folder(self._folder() / BEST_DIR, overwrite=True) as tmp:
                torch.save(state, tmp / WEIGHTS_FILE)
                (tmp / BEST_FILE).write_text(json.dumps({"step": step, "val_reward": reward}) + "\n")

    def _stop_now(self, step: int, runtime: Runtime) -> list[dict[str, torch.Tensor]]:
        """End the run: this step is the last, and its batches move no weight."""
        self.config.max_steps = step + 1
        if runtime.is_main:
            write_text(self._folder() / STOPPED_FILE, json.dumps({"step": step + 1, **self.early}) + "\n")
        return [{"stop": torch.zeros(())} for _ in range(self.config.grad_accum)]

    # ---- state and logs -------------------------------------------------------------------------

    def _folder(self) -> Path:
        return Path(self.config.output_dir) / PPO_DIR

    def _save_state(self, iteration: int, runtime: Runtime) -> None:
        """What the weights do not hold, as at the start of `iteration` (for exact resume)."""
        if runtime.is_main:
            state = {"iteration": iteration, "moments": self.moments.state_dict(), "beta": self.beta, "early": self.early}
            write_text(self._folder() / "state" / f"iteration-{iteration:06d}.json", json.dumps(state, indent=1) + "\n")

    def _load_state(self, iteration: int) -> None:
        path = self._folder() / "state" / f"iteration-{iteration:06d}.json"
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: PPO keeps its running statistics there to resume at iteration "
                                  f"{iteration}; resume from another checkpoint or start a fresh output_dir")
        state = json.loads(path.read_text())
        self.moments.load_state_dict(state["moments"])
        self.beta, self.early = state["beta"], state["early"]

    def _log_iteration(self, iteration: int, prompts: list[RLPrompt], answers: list[Response], scores: Rewards,
                       whitened: torch.Tensor, kl: torch.Tensor, runtime: Runtime) -> None:
        """Every answer of the iteration to ppo/rollouts/, and one line of means to stderr."""
        records = [{"id": p.id, "messages": p.messages, "safety": p.safety, "response": a.text, "finished": a.finished,
                    "reward": float(scores.combined[i]), "helpful": float(scores.helpful[i]),
                    **({"safety_score": float(scores.safety[i])} if scores.safety is not None else {}),
                    "whitened": float(whitened[i]), "kl": float(kl[i])}
                   for i, (p, a) in enumerate(zip(prompts, answers))]
        records = gather_objects(records, runtime)
        if runtime.is_main:
            write_jsonl(self._folder() / "rollouts" / f"iteration-{iteration:06d}.jsonl", records)
            reward, kl = (sum(r[key] for r in records) / len(records) for key in ("reward", "kl"))
            print(f"ppo: iteration {iteration + 1}: reward {reward:.4f}, KL {kl:.4f}, β {self.beta:.4g}",
                  file=sys.stderr, flush=True)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        dtype = compute_dtype(self.config.dtype, device)
        return contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device_type=device.type, dtype=dtype)



