"""A product's acceptance rules: which defect regions reject a part (see service/decisions/rules.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from service.api.dependencies import Audit, AuditDep, ProductId, Services, StoreServices
from service.api.errors import error_responses
from service.api.schemas import RulesView
from service.decisions.rules import AcceptanceRules
from service.products.store import Product

router = APIRouter(prefix="/products", tags=["rules"], responses=error_responses(401, 403, 503))


@router.get(
    "/{product_id}/rules",
    summary="Show a product's acceptance rules (null: the threshold rule decides)",
    responses=error_responses(404, 422),
)
async def get_rules(product_id: ProductId, services: StoreServices) -> RulesView:
    """The rules and their version; 404 unknown product."""
    return RulesView.of(await services.workflows.existing(product_id))


@router.put(
    "/{product_id}/rules",
    summary="Replace a product's acceptance rules and scale (mm_per_pixel)",
    responses=error_responses(400, 404, 413, 422, 507),
)
async def put_rules(
    product_id: ProductId, rules: AcceptanceRules, services: StoreServices, audit: AuditDep
) -> RulesView:
    """Replaces all of the product's rules (they are kept across reference uploads); 404 unknown product, 422 invalid
    rules, 507 when the data dir fails."""
    return RulesView.of(await _store_rules(services, audit, product_id, rules))


@router.delete(
    "/{product_id}/rules",
    summary="Remove a product's rules: the threshold rule decides again",
    responses=error_responses(404, 422, 507),
)
async def delete_rules(product_id: ProductId, services: StoreServices, audit: AuditDep) -> RulesView:
    """The rules version still counts the change; 404 unknown product, 507 when the data dir fails."""
    return RulesView.of(await _store_rules(services, audit, product_id, None))


async def _store_rules(services: Services, audit: Audit, product_id: str, rules: AcceptanceRules | None) -> Product:
    before = await run_in_threadpool(services.store.get, product_id)
    product = await run_in_threadpool(services.store.set_rules, product_id, rules)
    if product is None:  # no such product: nothing changed
        return await services.workflows.existing(product_id)
    action = "rules.delete" if rules is None else "rules.set"
    await audit(action, product_id, _audited_rules(before), _audited_rules(product))
    return product


def _audited_rules(product: Product | None) -> dict[str, Any] | None:
    if product is None:
        return None
    rules = None if product.rules is None else product.rules.model_dump(mode="json")
    return {"rules": rules, "rules_version": product.rules_version}
