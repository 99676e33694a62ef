"""Typed errors. Each carries a one-line message that says what is wrong and how to fix it.

The CLI turns any `Llama2Error` into that line and a non-zero exit code; the server (later) maps
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
    retries did not cure."""


class UnsupportedError(ProviderError):
    """A provider was asked for something its backend cannot do (say, log-likelihoods from a chat API)."""
