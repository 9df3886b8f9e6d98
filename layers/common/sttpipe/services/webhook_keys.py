"""A webhook secret per tenant, in the Standard Webhooks form (`whsec_<base64>`).

A tenant's secret is derived from the deployment's signing key (Secrets Manager) and the
tenant's key generation: HMAC-SHA256(signing key, "<tenant>/<generation>"). The database holds
only generations, so a leaked row reveals nothing, and one tenant's secret says nothing about
another's. It is made on first use (the first upload that names a webhook), shown once (in that
answer, or the answer to a rotation), and rotated on request; after a rotation deliveries carry
a signature by the previous secret too, for `grace`, so that receivers can switch over.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from sttpipe.domain.models import WebhookKey
from sttpipe.ports import WebhookKeyStore

SECRET_PREFIX = "whsec_"  # what Standard Webhooks libraries expect in front of the key
DEFAULT_GRACE = timedelta(hours=24)


class IssuedSecret(BaseModel):
    """A secret as the API shows it: once, when it is made."""

    secret: str = Field(description="`whsec_<base64>`: give it to a Standard Webhooks verifier.")
    generation: int
    rotated_at: datetime
    previous_valid_until: datetime | None = Field(
        description="Deliveries carry a signature by the previous secret too until then."
    )


class TenantWebhookSecrets:
    def __init__(
        self,
        store: WebhookKeyStore,
        signing_key: Callable[[], str],
        *,
        grace: timedelta = DEFAULT_GRACE,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._signing_key = signing_key
        self._grace = grace
        self._clock = clock

    def first_use(self, tenant_id: str) -> IssuedSecret | None:
        """The tenant's new secret if it had none, else None (it was shown when it was made)."""
        key, created = self._store.get_or_create(tenant_id)
        return self._issued(key) if created else None

    def rotate(self, tenant_id: str) -> IssuedSecret:
        return self._issued(self._store.rotate(tenant_id))

    def describe(self, tenant_id: str) -> WebhookKey | None:
        return self._store.current(tenant_id)

    def signing_secrets(self, tenant_id: str) -> list[str]:
        """What a delivery is signed with: the current secret, and the previous one within the
        grace period after a rotation. A tenant without a key (its jobs predate keys) gets one."""
        key, _ = self._store.get_or_create(tenant_id)
        secrets = [self.secret(tenant_id, key.generation)]
        if key.generation > 1 and self._clock() < key.rotated_at + self._grace:
            secrets.append(self.secret(tenant_id, key.generation - 1))
        return secrets

    def secret(self, tenant_id: str, generation: int) -> str:
        message = f"{tenant_id}/{generation}".encode()
        key = hmac.new(self._signing_key().encode(), message, hashlib.sha256).digest()
        return SECRET_PREFIX + base64.b64encode(key).decode("ascii")

    def _issued(self, key: WebhookKey) -> IssuedSecret:
        previous_until = key.rotated_at + self._grace if key.generation > 1 else None
        return IssuedSecret(
            secret=self.secret(key.tenant_id, key.generation),
            generation=key.generation,
            rotated_at=key.rotated_at,
            previous_valid_until=previous_until,
        )
