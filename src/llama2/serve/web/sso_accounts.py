"""Who a verified ID token is on this server: the policy of `web.sso[]` applied to its claims.

- The email comes from `email_claim` (default `email`) and must be in `allowed_domains` (exact domain;
  `*` allows any); a provider that says `email_verified: false` is refused.
- The role: with `role_claim`, the highest role its values map to in `role_map` (else `default_role`;
  none at all refuses the sign-in), set again at every sign-in so the provider's groups stay the truth.
  Without `role_claim`, a new user gets `default_role` and admins manage it afterwards.
- The account: the one already linked to this provider and subject; else the one with this email,
  which is linked now (an invited user signing in with SSO the first time) unless it is linked to
  another provider; else, with `create_users`, a new one (no password). Disabled accounts are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from llama2.serve.auth import ROLES
from llama2.serve.config import SSOProvider
from llama2.serve.store import Store, User, utcnow
from llama2.serve.web.sso_client import SSOError

ROLE_RANK = {role: len(ROLES) - i for i, role in enumerate(ROLES)}  # ROLES lists the strongest first


@dataclass(frozen=True)
class SSOAccount:
    """The signed-in user, and what the sign-in changed (for the audit log)."""

    user_id: int
    email: str
    role: str
    created: bool
    linked: bool
    role_before: str | None


def email_of(provider: SSOProvider, claims: dict[str, Any]) -> str:
    """The claims' email, checked against the provider's allowed domains."""
    email = claims.get(provider.email_claim)
    label = provider.label
    if not isinstance(email, str) or "@" not in email:
        raise SSOError(f"{label} did not say your email address (claim {provider.email_claim!r}); an admin must "
                       "allow the email scope for this server.", f"no {provider.email_claim} claim", 403)
    email = email.strip().lower()
    if claims.get("email_verified") is False:
        raise SSOError(f"{label} has not verified {email}; verify it there, then sign in again.",
                       "email not verified", 403)
    domain = email.rsplit("@", 1)[1]
    if provider.allowed_domains and not provider.allows_domain(domain):
        allowed = ", ".join(provider.allowed_domains)
        raise SSOError(f"Addresses at {domain} may not sign in here with {label} (allowed: {allowed}).",
                       f"domain {domain} not allowed", 403)
    return email


def role_of(provider: SSOProvider, claims: dict[str, Any]) -> str | None:
    """The role the claims map to (the strongest, when several do), else the provider's default role;
    None only when that is null too. Without `role_claim`: the default role."""
    if provider.role_claim is None:
        return provider.default_role
    values = claims.get(provider.role_claim)
    values = [values] if isinstance(values, str) else values if isinstance(values, list) else []
    mapped = [provider.role_map[v] for v in values if isinstance(v, str) and v in provider.role_map]
    return max(mapped, key=ROLE_RANK.__getitem__) if mapped else provider.default_role


def resolve(store: Store, provider: SSOProvider, claims: dict[str, Any]) -> SSOAccount:
    """The account these verified claims sign in to (created or linked as the module says); SSOError
    with a message for the person when the policy says no."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SSOError(f"{provider.label} sent a token without a subject; start again.", "no sub claim")
    email = email_of(provider, claims)
    role = role_of(provider, claims)
    if role is None:
        raise SSOError(f"Your {provider.label} account is in no group that may use this server; ask an admin.",
                       f"no role for {provider.role_claim} values", 403)
    try:
        return _sign_in(store, provider, subject, email, role)
    except IntegrityError:  # a concurrent first sign-in with the same email or subject won; it exists now
        return _sign_in(store, provider, subject, email, role)


def _sign_in(store: Store, provider: SSOProvider, subject: str, email: str, role: str) -> SSOAccount:
    with store.writing() as session:
        user = session.scalar(select(User).where(User.auth_provider == provider.name, User.subject == subject))
        created = linked = False
        if user is None:
            user = session.scalar(select(User).where(User.email == email))
            if user is not None and user.auth_provider is not None:
                raise SSOError(f"{email} signs in another way here (through {user.auth_provider}); use that, "
                               "or ask an admin.", f"email linked to {user.auth_provider}", 403)
            if user is None and not provider.create_users:
                raise SSOError(f"There is no account for {email} on this server; ask an admin to invite you.",
                               "no account and create_users is off", 403)
            if user is None:
                user = User(email=email, role=role, password_hash=None)
                session.add(user)
                created = True
            user.auth_provider, user.subject, linked = provider.name, subject, not created
        if user.disabled:
            raise SSOError("This account is disabled; ask an admin.", "account disabled", 403)
        role_before = user.role
        if provider.role_claim is not None and not created:
            user.role = role
        user.last_sign_in_at = utcnow()
        session.flush()
        return SSOAccount(user.id, user.email, user.role, created, linked,
                          role_before if role_before != user.role else None)
