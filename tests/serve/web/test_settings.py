"""serve.yaml's `web:` section and the `roles:` of a model, validated with the rest of the config."""

from __future__ import annotations

import pytest
import yaml

from llama2.errors import ConfigError
from llama2.serve.config import ModelEntry, WebSettings, load_config


def config_from(tmp_path, data: dict):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, {}, [])


def test_web_settings_default_and_load(tmp_path):
    assert load_config(None, {}, []).web == WebSettings()
    assert WebSettings().allow_signup is False and WebSettings().setup_loopback_only is True
    config = config_from(tmp_path, {"web": {"allow_signup": True, "session_hours": 8, "max_failed_logins": 3,
                                            "max_failed_logins_per_ip": 10, "lockout_minutes": 30,
                                            "setup_loopback_only": False}})
    assert config.web == WebSettings(allow_signup=True, session_hours=8, max_failed_logins=3,
                                     max_failed_logins_per_ip=10, lockout_minutes=30, setup_loopback_only=False)


@pytest.mark.parametrize("web, message", [
    ({"allow_signup": "yes"}, "web.allow_signup must be true or false"),
    ({"session_hours": 0}, "web.session_hours must be an integer >= 1"),
    ({"lockout_minutes": True}, "web.lockout_minutes must be an integer >= 1"),
    ({"max_failed_logins": "5"}, "web.max_failed_logins must be an integer >= 1"),
    ({"signup": True}, "web: unknown key 'signup' (valid: allow_signup,"),
    (["allow_signup"], "web must be a mapping of allow_signup"),
])
def test_bad_web_settings_are_named(tmp_path, web, message):
    with pytest.raises(ConfigError, match="problem") as error:
        config_from(tmp_path, {"web": web})
    assert message in str(error.value)


def test_roles_restrict_a_model_and_default_to_all(tmp_path):
    config = config_from(tmp_path, {"models": {
        "open": "local:default",
        "staff": {"spec": "local:default", "roles": ["admin"], "max_batch_size": 2},
    }})
    open_, staff = config.models
    assert open_.roles is None and open_.allows("user") and open_.allows("admin")
    assert staff.roles == ("admin",) and staff.allows("admin") and not staff.allows("user")
    assert dict(staff.options) == {"max_batch_size": 2}  # roles is the server's, not the provider's


@pytest.mark.parametrize("roles, message", [
    (["staff"], "models.m.roles: unknown role(s) 'staff' (valid: admin, user)"),
    ("admin", "models.m.roles must be a list of roles"),
    ([], "models.m.roles must be a list of roles"),
])
def test_bad_roles_are_named(tmp_path, roles, message):
    with pytest.raises(ConfigError) as error:
        config_from(tmp_path, {"models": {"m": {"spec": "local:default", "roles": roles}}})
    assert message in str(error.value)


def test_hosted_and_remote_models_are_external():
    assert not ModelEntry("a", "local:default").is_external
    assert not ModelEntry("v", "vllm:/models/x").is_external
    for spec in ("openai:gpt-4o", "azure:gpt-35", "anthropic:claude-3-5-sonnet", "http://10.0.0.2:8080/v1#m"):
        assert ModelEntry("r", spec).is_external, spec


def test_unknown_top_level_keys_name_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown top-level key 'webchat' \\(use server, models, web\\)"):
        config_from(tmp_path, {"webchat": {}})
