"""`zoo generate` and `zoo chat`: text from a causal LM (registered by the core plugin, `zoo.plugin`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from zoo.config import config_from_args, spec_ref
from zoo.errors import DataError, ZooError
from zoo.files import parse_json, read_text, shorten, validate_file_model
from zoo.lm.tokenizers import named_tokenizer, text_tokenizer, tokenizer_argument
from zoo.specs import MAX_SEED, PRECISION_HELP, QUANTIZE_METHODS, parse_override


@dataclass
class Session:
    """What `zoo generate` and `zoo chat` share: the model, its tokenizer and the decoding options."""

    config: Any
    model: Any
    tokenizer: Any
    sampler: str | dict[str, Any] | None
    options: dict[str, Any]


def check_arguments(args: argparse.Namespace) -> None:
    """What would be refused or ignored later, refused before a model is opened: text that is not
    UTF-8 (a byte the shell passed through), ``--system`` without a chat, ``--set samplers.X``
    for a sampler this command does not use (one named alone is the sampler: --sampler X)."""
    for flag in ("prompt", "system", "stop"):
        values = getattr(args, flag, None) or []
        for value in [values] if isinstance(values, str) else values:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:
                byte = ord(value[err.start]) - 0xDC00  # how Python keeps a byte that is not UTF-8
                raise ZooError(
                    f"--{flag}: not UTF-8 text (the byte 0x{byte & 0xFF:02x} at character {err.start}); "
                    "give text in UTF-8, or put it in a --prompt-file"
                ) from None
    if args.system and not getattr(args, "chat", True):
        raise ZooError("--system is the system message of a chat: add --chat")
    named = sorted({parse_override(o)[0][1] for o in args.set or () if parse_override(o)[0][:1] == ["samplers"]})
    if named and args.sampler is None and len(named) == 1:
        args.sampler = named[0]
        print(f"zoo: note: sampling with {named[0]!r}, the sampler --set changes", file=sys.stderr)
    elif (named and args.sampler not in named) or len(named) > 1:
        raise ZooError(
            f"--set changes the sampler{'s' if len(named) > 1 else ''} {', '.join(map(repr, named))}, but this command "
            f"samples with {repr(args.sampler) if args.sampler else 'the model default'}; name one with --sampler"
        )


def open_session(args: argparse.Namespace) -> Session:
    check_arguments(args)
    cfg = config_from_args(args, ("device", "precision"))
    from zoo.finetune import open_model
    from zoo.runtime import Runtime

    seed = args.seed if args.seed is not None else cfg.runtime.seed
    if not 0 <= seed <= MAX_SEED:
        raise ZooError(f"--seed {shorten(seed)}: must be between 0 and {MAX_SEED}")
    runtime = Runtime(cfg.runtime)
    model = runtime.prepare_for_inference(open_model(spec_ref(args.path), cfg), args.quantize)  # ours: cast once
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "stop": args.stop or (),
        "seed": seed,
        "runtime": runtime,
        "config": cfg,
        "static": args.static,
        "compile": args.compile,
    }
    named = named_tokenizer(args.tokenizer, config=cfg) if args.tokenizer else None
    return Session(
        cfg,
        model,
        named or text_tokenizer(model, args.path),
        spec_ref(args.sampler) if args.sampler is not None else None,
        options,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    texts = list(args.prompt or [])
    conversations: list[list[dict[str, str]]] = []
    if args.prompt_file:
        path = Path(args.prompt_file)
        if path.suffix == ".jsonl":
            conversations = read_conversations(path)
        else:
            text = read_text(path, DataError)
            texts += [line for line in text.splitlines() if line.strip()]
    if not texts and not conversations:
        raise ZooError("give --prompt TEXT (repeatable) or --prompt-file FILE (one prompt per line, or JSONL messages)")
    from zoo.lm.generation import chat_ids, generate, stream

    session = open_session(args)
    model, tokenizer, sampler, kwargs = session.model, session.tokenizer, session.sampler, session.options
    prompts: list[str] | list[list[int]] = texts
    chat = bool(args.chat or conversations)
    if chat:  # the reply alone is printed: the templated prompt (special tokens, headers) is not the user's text
        system = [{"role": "system", "content": args.system}] if args.system else []
        conversations += [[*system, {"role": "user", "content": t}] for t in texts]
        prompts = [chat_ids(tokenizer, messages) for messages in conversations]
    if args.stream:
        if len(prompts) != 1 or args.json:
            raise ZooError("--stream prints one prompt's text as it is generated; give one --prompt, no --json")
        sys.stdout.write("" if chat else texts[0])
        for chunk in stream(model, tokenizer, prompts, sampler, **kwargs):
            sys.stdout.write(chunk.deltas[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    result = generate(model, tokenizer, prompts, sampler, **kwargs)
    if result.first_step_seconds is not None:
        seconds = result.first_step_seconds
        print(f"--compile: the first decoding step took {seconds:.1f} s (compilation)", file=sys.stderr)
    asked: list[Any] = [{"messages": m} for m in conversations] if chat else [{"prompt": t} for t in texts]
    for n, (row, t, i, r) in enumerate(zip(asked, result.texts, result.ids, result.finish_reasons, strict=True)):
        if args.json:  # JSON lines: one object per prompt, as it is read by `jq` or line by line
            print(json.dumps({**row, "text": t, "ids": i, "finish_reason": r}))
            continue
        if n:
            print("-" * 40)
        print(t if chat else row["prompt"] + t)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """A conversation on stdin/stdout: each turn is streamed; the history is re-encoded with the
    chat template every turn (an empty line or end of input ends it)."""
    from zoo.lm.generation import History, chat_ids, stream

    session = open_session(args)
    history = History(session.model, session.options["runtime"])
    messages = [{"role": "system", "content": args.system}] if args.system else []
    chat_ids(session.tokenizer, [{"role": "user", "content": "check"}])  # no template: say so now
    print(f"chatting with {args.path} (an empty line or Ctrl-D ends)", file=sys.stderr)
    while True:
        try:
            line = input("> ")
        except EOFError:
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        ids = chat_ids(session.tokenizer, messages)
        cache = history.cache_for(ids)
        reply, drawn = [], []
        for chunk in stream(session.model, session.tokenizer, [ids], session.sampler, cache=cache, **session.options):
            sys.stdout.write(chunk.deltas[0])
            sys.stdout.flush()
            reply.append(chunk.deltas[0])
            drawn.append(chunk.tokens[0])
        history.record(ids, drawn)
        sys.stdout.write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
    return 0


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    role: str = Field(min_length=1, max_length=40)
    content: str = Field(max_length=1 << 20)


class Conversation(BaseModel):
    """One line of a JSONL prompt file: ``{"messages": [{"role": "user", "content": "..."}]}``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    messages: list[Message] = Field(min_length=1, max_length=1000)


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    out = []
    for n, line in enumerate(read_text(path, DataError, limit=64 << 20).splitlines(), 1):
        if line.strip():
            where = f"{path}:{n}"
            record = validate_file_model(Conversation, parse_json(line, where, DataError), where, DataError)
            out.append([m.model_dump() for m in record.messages])
    if not out:
        raise DataError(f"{path}: no conversations (one JSON object with 'messages' per line)")
    return out


MODEL_HELP = "an artifact, a run folder, a LoRA adapter folder, a local model folder (e.g. Hugging Face) or a preset"


def chat_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help=MODEL_HELP)
    p.add_argument("--system", help="a system message")
    decoding_arguments(p)


def generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help=MODEL_HELP)
    p.add_argument("--prompt", action="append", help="prompt text (repeatable: a batch)")
    p.add_argument("--prompt-file", help="a file with one prompt per line, or .jsonl records with 'messages' (chat)")
    p.add_argument("--chat", action="store_true", help="format each --prompt with the tokenizer's chat template")
    p.add_argument("--system", help="a system message for --chat")
    p.add_argument(
        "--json", action="store_true", help="JSON lines: {prompt or messages, text, ids, finish_reason} per prompt"
    )
    decoding_arguments(p)


def decoding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sampler", help="sampler preset, type or inline spec (default: the model's generation config, else greedy)"
    )
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--min-new-tokens", type=int, default=0)
    p.add_argument("--stop", action="append", help="stop string (repeatable)")
    p.add_argument("--seed", type=int, help="sampling seed (default: runtime.seed)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated (zoo chat always does)")
    p.add_argument("--static", action="store_true", help="decode with static shapes (the model's decode_step)")
    p.add_argument("--compile", action="store_true", help="torch.compile the static decode step (slow first call)")
    tokenizer_argument(p)
    quantize_argument(p)
    p.add_argument("--device")
    p.add_argument("--precision", help=PRECISION_HELP)


def quantize_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_METHODS,
        default="none",
        help="int8: linear layers with int8 weights (CPU, fp32 activations; faster, smaller)",
    )
