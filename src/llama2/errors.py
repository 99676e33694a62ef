"""Typed errors. Each carries a one-line message that says what is wrong and how to fix it.

The CLI turns any `Llama2Error` into that line and a non-zero exit code; the server maps
them to OpenAI-shaped errors in one place. Internal invariants use `assert`, never these.
"""


class Llama2Error(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(Llama2Error):
    """A model configuration, recipe or setting is invalid."""


class UnknownModelError(Llama2Error):
    """A model name is neither a preset, a bundled model nor an existing path."""


class CheckpointError(Llama2Error):
    """A checkpoint is missing, truncated, or does not match the model it is loaded into."""


class OutputExistsError(CheckpointError):
    """A file or folder to write already exists and overwriting it was not allowed."""


class TokenizerError(Llama2Error):
    """A tokenizer file is missing or unreadable, or does not fit the model."""


class DialogError(Llama2Error):
    """A chat dialog does not follow the Llama 2 chat format's rules."""


class ContextLengthError(Llama2Error):
    """A request needs more positions than the model's context window holds."""


class DataError(Llama2Error):
    """A corpus, data file or token-shard directory is missing, malformed or inconsistent."""


class ProviderError(Llama2Error):
    """A model provider failed: bad spec or settings, missing credentials, or an upstream error that
    retries did not cure. `status` is the upstream HTTP status where there was one (the server
    passes 429 on as 429 and the rest as 502/504) and `retry_after_s` its Retry-After."""

    def __init__(self, message: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


class UnsupportedError(ProviderError):
    """A provider was asked for something its backend cannot do (say, log-likelihoods from a chat API)."""


class OverloadedError(Llama2Error):
    """A model's request queue is full; the caller should retry after `retry_after_s` seconds."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ServeError(Llama2Error):
    """A request to the server cannot be served. `status` is the HTTP status it becomes and `code`
    OpenAI's error code; the server turns every ServeError into OpenAI's error shape in one place."""

    status = 400
    code: str | None = None


class AuthenticationError(ServeError):
    """No API key, or one that is unknown or revoked."""

    status = 401
    code = "invalid_api_key"


class PermissionDeniedError(ServeError):
    """The key is valid but may not do this (a model outside its list, an admin-only action)."""

    status = 403
    code = "model_not_allowed"


class RateLimitError(ServeError):
    """A key went past its requests per minute or tokens per day; retry after `retry_after_s`."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
