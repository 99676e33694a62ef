"""`llama2 train RECIPE [RECIPE.yaml] [key=value ...]`: run a training recipe on the one loop.

The YAML file gives the settings and `key=value` overrides change them (dotted keys reach into
mappings, values are YAML: `lr=3e-4`, `compile=true`, `model.n_layers=4`). The whole config is
checked before anything is loaded. The same command under `torchrun --nproc_per_node N` trains
with FSDP on N processes; `resume=auto` (the default) continues from OUTPUT_DIR's last checkpoint.

    llama2 train pretrain recipes/pretrain-tiny.yaml output_dir=runs/tiny max_steps=200
    llama2 train sft recipes/sft-tiny.yaml data=my-dialogs.jsonl lora.r=8
    llama2 train reward recipes/reward-tiny.yaml margin=large
    llama2 train dpo recipes/dpo-tiny.yaml beta=0.1
    llama2 train rejection-sampling recipes/rs-tiny.yaml k=8 'temperature=[0.9,1.1]' iterations=2
    llama2 train ppo recipes/ppo-tiny.yaml iterations=20
    llama2 train context-distillation recipes/cd-tiny.yaml
"""

from __future__ import annotations

import argparse
import sys

import yaml

from llama2.cli.common import print_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train with a recipe (pretrain, ...)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="the training method: pretrain, sft, reward, dpo, rejection-sampling, ppo "
                                       "or context-distillation")
    parser.add_argument("settings", nargs="*", metavar="RECIPE.yaml | key=value",
                        help="a recipe YAML file first (optional), then overrides")
    parser.add_argument("--dry-run", action="store_true", help="check the config and print it resolved; train nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from llama2.errors import ConfigError
    from llama2.train.config import did_you_mean, load_config
    from llama2.train.distributed import launcher_world_size
    from llama2.train.recipes import RECIPES

    recipe_cls = RECIPES.get(args.recipe)
    if recipe_cls is None:
        raise ConfigError(f"unknown recipe {args.recipe!r}{did_you_mean(args.recipe, RECIPES)}; choose one of {', '.join(RECIPES)}")
    settings = list(args.settings)
    path = settings.pop(0) if settings and "=" not in settings[0] else None
    config = load_config(recipe_cls.Config, path, settings, world_size=launcher_world_size())
    if args.dry_run:
        resolved = config.to_dict()
        if args.json:
            print_json(resolved)
        else:
            sys.stdout.write(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()},
                                            sort_keys=False))
        return 0

    from llama2.train.loop import train

    recipe = recipe_cls(config)
    # Rejection sampling and distillation drive the loop once per stage (sampling between); others plug into it.
    result = recipe.run() if hasattr(recipe, "run") else train(recipe)
    if not result.main_process:
        return 0
    model = recipe.finalize(result.checkpoint) if hasattr(recipe, "finalize") and result.checkpoint else None
    summary = {"step": result.step, "checkpoint": str(result.checkpoint) if result.checkpoint else None,
               "model": str(model) if model else None, "metrics": result.metrics}
    if args.json:
        print_json(summary)
    else:
        loss = result.metrics.get("loss")
        print(f"trained to step {result.step}" + (f", loss {loss:.4f}" if loss is not None else "")
              + (f"; model and state in {result.checkpoint}" if result.checkpoint else "")
              + (f"; the trained model is {model}" if model else ""))
    return 0
