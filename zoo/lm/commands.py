"""`zoo generate`: text from a causal LM (registered by the core plugin, `zoo.plugin`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from zoo.config import load_config, spec_ref
from zoo.errors import DataError, ZooError
from zoo.files import read_text, shorten
from zoo.specs import MAX_SEED


def cmd_generate(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    for flag in ("device", "precision"):
        if getattr(args, flag) is not None:
            overrides.append(f"runtime.{flag}={json.dumps(getattr(args, flag))}")
    cfg = load_config(args.registry, overrides)
    prompts = list(args.prompt or [])
    if args.prompt_file:
        text = read_text(Path(args.prompt_file), DataError)
        prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ZooError("give --prompt TEXT (repeatable) or --prompt-file FILE (one prompt per line)")
    from zoo.finetune import open_model
    from zoo.lm.generation import generate, stream
    from zoo.runtime import Runtime

    model = open_model(spec_ref(args.path), cfg).eval()
    tokenizer = None  # the model's own (byte-level if it has none)
    runtime = Runtime(cfg.runtime)
    seed = args.seed if args.seed is not None else cfg.runtime.seed
    if not 0 <= seed <= MAX_SEED:
        raise ZooError(f"--seed {shorten(seed)}: must be between 0 and {MAX_SEED}")
    sampler = spec_ref(args.sampler)
    kwargs: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "stop": args.stop or (),
        "seed": seed,
        "runtime": runtime,
        "config": cfg,
        "static": args.static,
        "compile": args.compile,
    }
    if args.stream:
        if len(prompts) != 1 or args.json:
            raise ZooError("--stream prints one prompt's text as it is generated; give one --prompt, no --json")
        sys.stdout.write(prompts[0])
        for chunk in stream(model, tokenizer, prompts, sampler, **kwargs):
            sys.stdout.write(chunk.deltas[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    result = generate(model, tokenizer, prompts, sampler, **kwargs)
    if args.json:
        rows = [
            {"prompt": p, "text": t, "ids": i, "finish_reason": r}
            for p, t, i, r in zip(prompts, result.texts, result.ids, result.finish_reasons, strict=True)
        ]
        print(json.dumps(rows, indent=2))
    else:
        for p, t in zip(prompts, result.texts, strict=True):
            print(p + t)
            if len(prompts) > 1:
                print("-" * 40)
    return 0


def generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="an artifact, a run folder, a local model folder (e.g. Hugging Face) or a preset")
    p.add_argument("--prompt", action="append", help="prompt text (repeatable: a batch)")
    p.add_argument("--prompt-file", help="a file with one prompt per line")
    p.add_argument("--sampler", default="greedy", help="sampler preset or type (default: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="sampling seed (default: runtime.seed)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated")
    p.add_argument("--json", action="store_true")
    p.add_argument("--static", action="store_true", help="decode with static shapes (the model's decode_step)")
    p.add_argument("--compile", action="store_true", help="torch.compile the static decode step (slow first call)")
    p.add_argument("--device")
    p.add_argument("--precision")
