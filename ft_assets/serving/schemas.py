"""The OpenAI request bodies ``ftops serve`` accepts; unknown or unsupported fields are refused by name."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    user: str | None = None

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: give up to 4 non-empty strings")
        return tuple(stops)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int]
    echo: Literal[False] = False

    def text(self) -> str | list[int]:
        """The prompt text, or token ids (as vLLM and OpenAI accept them)."""
        if isinstance(self.prompt, list) and self.prompt and all(isinstance(t, int) for t in self.prompt):
            return self.prompt
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise ValueError("prompt: send one prompt per request (batching happens on the server)")
            return self.prompt[0]
        return self.prompt

    def requested_tokens(self) -> int | None:
        return self.max_tokens
