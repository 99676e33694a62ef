"""Azure OpenAI through the official `openai` SDK (`AsyncAzureOpenAI`): `azure:DEPLOYMENT`.

Requests go to `{endpoint}/openai/deployments/{deployment}/...?api-version=...`. Credentials, first
found wins: the key in AZURE_OPENAI_API_KEY (or the variable `api_key_env` names), sent as the
`api-key` header; an Entra ID token in AZURE_OPENAI_AD_TOKEN; or, when the `azure-identity` package
is installed, a token provider over `DefaultAzureCredential` (managed identity, `az login`, ...).
Deployments are chat models unless the providers file says `text_completion: true`.
"""

from __future__ import annotations

from typing import Any

from llama2.errors import ProviderError
from llama2.providers.base import Capabilities
from llama2.providers.openai import OpenAIProvider
from llama2.providers.settings import AZURE_AD_TOKEN_ENV, ENDPOINT_ENVS, ProviderSettings, load_settings

DEFAULT_API_VERSION = "2024-10-21"  # the newest GA data-plane version when this was written
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureOpenAIProvider(OpenAIProvider):
    """A deployment on an Azure OpenAI resource (`deployment` setting, else the spec's name)."""

    scheme = "azure"
    max_tokens_field = "max_tokens"  # what every GA api-version accepts

    @classmethod
    def from_spec(cls, spec: str, target: str, **overrides: object) -> "AzureOpenAIProvider":
        settings = load_settings(cls.scheme, spec, overrides)
        return cls(spec, settings.deployment or target, settings)

    @staticmethod
    def default_capabilities(model: str, settings: ProviderSettings) -> Capabilities:
        text = bool(settings.text_completion)
        scores = bool(settings.loglikelihood) and text
        return Capabilities(chat=not text, text_completion=text, loglikelihood=scores)

    def make_client(self, sdk: Any) -> Any:
        endpoint = self.settings.endpoint
        if not endpoint:
            raise ProviderError(
                f"{self.spec}: no Azure endpoint; set {ENDPOINT_ENVS['azure']} "
                "(https://RESOURCE.openai.azure.com) or endpoint in the providers file"
            )
        self.where = endpoint
        return sdk.AsyncAzureOpenAI(
            azure_endpoint=endpoint,
            azure_deployment=self.model,
            api_version=self.settings.api_version or DEFAULT_API_VERSION,
            timeout=self.settings.timeout_s,
            max_retries=self.settings.max_retries,
            **self.credentials(),
        )

    def credentials(self) -> dict[str, Any]:
        """`api_key`, `azure_ad_token` or `azure_ad_token_provider`, in that order of preference."""
        if self.settings.api_key:
            return {"api_key": self.settings.api_key}
        if self.settings.ad_token:
            return {"azure_ad_token": self.settings.ad_token}
        try:
            from azure.identity import DefaultAzureCredential, get_bearer_token_provider
        except ImportError:
            raise ProviderError(
                f"{self.spec}: no Azure credentials; set {self.settings.api_key_env} (key) or "
                f"{AZURE_AD_TOKEN_ENV} (Entra token), or pip install azure-identity to use DefaultAzureCredential"
            ) from None
        return {"azure_ad_token_provider": get_bearer_token_provider(DefaultAzureCredential(), ENTRA_SCOPE)}
