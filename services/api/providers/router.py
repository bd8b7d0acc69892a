from __future__ import annotations

from services.api.deps import SessionDep
from services.api.openapi import api_router
from services.api.providers import service
from services.api.providers.schemas import PROVIDERS_EXAMPLE, ProviderOut
from services.api.providers.state import ProvidersDep

router = api_router(prefix="/providers", tags=["providers"])


@router.get(
    "",
    response_model=list[ProviderOut],
    responses={200: {"content": {"application/json": {"example": PROVIDERS_EXAMPLE}}}},
)
async def list_providers(session: SessionDep, config: ProvidersDep) -> list[ProviderOut]:
    """Every provider of the providers file (PROVIDERS_FILE; without it the one `default`):
    its state as the senders report it (binds, breaker, current rate against `max_tps`) and
    the last hour's receipts by outcome, in all and per operator code. No secret is shown."""
    rows = await service.providers_overview(session, config)
    return [ProviderOut.model_validate(row) for row in rows]
