"""The OpenAI API's request bodies as pydantic models, the server's limits, and the mapping of
the sampling fields onto zoo's samplers. No web framework here: `zoo.serving.app` uses these.

Unknown fields are ignored (clients send fields zoo has no use for, e.g. ``presence_penalty: 0``);
the ones zoo reads are checked strictly, and a bad one is a 400 whose message names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zoo.specs import MAX_SEED

MAX_STOP = 4  # the OpenAI API's own bound


class ApiError(Exception):
    """An answer other than 200, in the OpenAI error format; ``param`` names the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond it, 400 (413 for the body)."""

    max_body_bytes: int = 1 << 20
    max_prompt_tokens: int = 8192
    max_tokens: int = 1024  # per request; also capped by the model's context


class Sampling(BaseModel):
    """The fields completions and chat completions share."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=1, description="zoo's extension (as vLLM's)")
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    n: int = Field(1, ge=1, le=1)
    sampler: str | dict[str, Any] | None = Field(
        None, description="zoo's extension: a sampler preset, type (any sampler plugin) or inline spec"
    )

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP or any(not s or len(s) > 256 for s in stops):
            raise ValueError(f"at most {MAX_STOP} strings of 1 to 256 characters")
        return stop

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(Sampling):
    """``POST /v1/completions``: one prompt, as text or token ids."""

    prompt: str | list[int] | list[str] = Field(max_length=1 << 20)

    def one_prompt(self) -> str | list[int]:
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], str):
            if len(self.prompt) != 1:
                raise ApiError(400, "prompt: one prompt per request (a list of one string, or token ids)", "prompt")
            return str(self.prompt[0])
        return self.prompt  # type: ignore[return-value]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str = Field(max_length=1 << 20)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(max_length=1 << 20)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(Sampling):
    """``POST /v1/chat/completions``: a conversation, formatted with the model's chat template."""

    messages: list[Message] = Field(min_length=1, max_length=1000)
    max_completion_tokens: int | None = Field(None, ge=1)

    def plain_messages(self) -> list[dict[str, str]]:
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


def parse(body: bytes, model: type[BaseModel]) -> Any:
    """The request body as ``model``, or a 400 naming the first field at fault."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "body: not valid JSON", None) from None
    if not isinstance(data, dict):
        raise ApiError(400, "body: a JSON object is needed", None)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", where) from None


def sampler_spec(request: Sampling) -> str | dict[str, Any] | None:
    """The sampler a request asks for, as `zoo.build_sampler` takes it; None: the model's own
    recipe (its generation config), else greedy, as `zoo generate` without --sampler."""
    if request.sampler is not None:
        if request.temperature is not None or request.top_p is not None or request.top_k is not None:
            raise ApiError(400, "sampler: give either sampler or temperature/top_p/top_k, not both", "sampler")
        return request.sampler
    if request.temperature is None and request.top_p is None and request.top_k is None:
        return None
    if request.temperature == 0.0:  # OpenAI's convention for deterministic output
        return "greedy"
    spec: dict[str, Any] = {"type": "sample", "temperature": request.temperature or 1.0}
    if request.top_p is not None:
        spec["top_p"] = request.top_p
    if request.top_k is not None:
        spec["top_k"] = request.top_k
    return spec
