"""A product's acceptance rules: which defect regions reject a part (see service/rules.py for the semantics)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.dependencies import ProductId, Services, StoreServices, existing_product
from service.errors import StorageFailed, error_responses
from service.rules import AcceptanceRules
from service.store import Product, StoreError

router = APIRouter(prefix="/products", tags=["rules"], responses=error_responses(401, 403, 503))


def rules_view(product: Product) -> dict[str, Any]:
    """The product's rules (unset fields left out, null without rules) and their version, as the rules routes answer."""
    rules = None if product.rules is None else product.rules.model_dump(exclude_none=True)
    return {"product_id": product.product_id, "rules": rules, "rules_version": product.rules_version}


@router.get(
    "/{product_id}/rules",
    summary="Show a product's acceptance rules (null: the threshold rule decides)",
    responses=error_responses(404, 422),
)
def get_rules(product_id: ProductId, services: StoreServices) -> dict[str, Any]:
    """The rules and their version; 404 unknown product."""
    return rules_view(existing_product(services.store, product_id))


@router.put(
    "/{product_id}/rules",
    summary="Replace a product's acceptance rules and scale (mm_per_pixel)",
    responses=error_responses(400, 404, 413, 422, 507),
)
async def put_rules(product_id: ProductId, rules: AcceptanceRules, services: StoreServices) -> dict[str, Any]:
    """Replaces all of the product's rules (they are kept across reference uploads); 404 unknown product, 422 invalid
    rules, 507 when the data dir fails."""
    return rules_view(await _store_rules(services, product_id, rules))


@router.delete(
    "/{product_id}/rules",
    summary="Remove a product's rules: the threshold rule decides again",
    responses=error_responses(404, 422, 507),
)
async def delete_rules(product_id: ProductId, services: StoreServices) -> dict[str, Any]:
    """The rules version still counts the change; 404 unknown product, 507 when the data dir fails."""
    return rules_view(await _store_rules(services, product_id, None))


async def _store_rules(services: Services, product_id: str, rules: AcceptanceRules | None) -> Product:
    try:
        product = await run_in_threadpool(services.store.set_rules, product_id, rules)
    except StoreError as err:
        raise StorageFailed(str(err)) from err
    return product if product is not None else existing_product(services.store, product_id)
