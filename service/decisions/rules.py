"""Per-product acceptance rules: which defect regions reject a part (blob analysis, as Halcon/Cognex/Keyence
tools do), and where regions do not count.

Without rules the verdict is the image threshold rule (`score > threshold`, rule name "threshold"). With rules,
the regions decide: the mask (anomaly map above the pixel threshold) loses the pixels inside `ignore_in`
polygons, its 8-connected components of at least `min_area_px` pixels are the regions, and the part is rejected
when a rule fires, checked in the order of `RULE_NAMES`; with no limit set, any remaining region rejects
("any_region"). Polygons are in image pixel coordinates (x = column, y = row), filled as PIL draws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from PIL import Image, ImageDraw
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)

from model import Region, RegionSet, find_regions

MAX_COORDINATE = 1e7  # polygon coordinates (pixels); PIL draws polygons wrong from ~1e9 on, silently
MAX_MM_PER_PIXEL = 1e3  # 1 m a pixel; with 50 MP frames the mm² sizes stay far from float overflow
MAX_COUNT = 2**31 - 1  # region counts and areas in pixels


def _not_bool_or_text(value: object) -> object:
    """Lax pydantic reads JSON `true` as 1 and "5" as 5 (and strict pydantic refuses 5.0, an integer in JSON)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


NUMBER_ONLY = BeforeValidator(_not_bool_or_text)  # put after an int's Field (else the schema loses them)
# floats are strict (a JSON number: never true or "5"); arrays still make tuples
Coordinate = Annotated[FiniteFloat, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE, strict=True)]
Point = tuple[Coordinate, Coordinate]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=1000, description="[[x, y], ...] in image pixels")]

THRESHOLD_RULE = "threshold"  # no rules: the image score decides
ANY_REGION_RULE = "any_region"  # rules without limits: any region left after ignore_in rejects
RULE_NAMES = ("reject_in", "max_regions", "max_area_px", "max_area_mm2", "max_length_mm")
ALL_RULE_NAMES = (THRESHOLD_RULE, *RULE_NAMES, ANY_REGION_RULE)  # the bounded label set of the rule-hit metric


def _unset(value: object) -> bool:
    return value is None  # unset limits are left out of the rules as stored and answered


MM_LIMITS = ("max_area_mm2", "max_length_mm")  # limits in mm: they need the product's scale, mm_per_pixel
# the same in the JSON schema (a mm limit given, not null, needs mm_per_pixel given, not null), so that rules the
# schema calls valid are valid
_SCALE_NEEDED = {
    name: {
        "anyOf": [
            {"properties": {name: {"type": "null"}}},
            {"properties": {"mm_per_pixel": {"type": "number"}}, "required": ["mm_per_pixel"]},
        ]
    }
    for name in MM_LIMITS
}
SCALAR_FIELDS = ("mm_per_pixel", "min_area_px", *RULE_NAMES[1:])
ZONE_FIELDS = ("reject_in", "ignore_in")
# rules must set something (a scalar not null, or a non-empty zone list): `{}` would make any region reject, and
# clearing the rules is `DELETE /products/{id}/rules`; the same in the JSON schema
_SETS_SOMETHING = [{"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in SCALAR_FIELDS] + [
    {"required": [name], "properties": {name: {"minItems": 1}}} for name in ZONE_FIELDS
]
NOTHING_SET = (
    "the rules set nothing (every field absent, null or empty), which would reject any region: set at least one "
    "field, or DELETE /products/{id}/rules to go back to the threshold rule"
)


def sets_something(fields: dict[str, Any]) -> bool:
    """Whether a rules object (as JSON) sets a field: a value other than null or an empty list."""
    return any(value is not None and value != [] for value in fields.values())


class AcceptanceRules(BaseModel):
    """A product's rules (`PUT /products/{id}/rules`). Every field is optional but at least one must be set (not
    null, not an empty list); limits are exclusive maxima. Raises pydantic.ValidationError otherwise."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"dependentSchemas": _SCALE_NEEDED, "anyOf": _SETS_SOMETHING},
    )
    mm_per_pixel: float | None = Field(
        None,
        exclude_if=_unset,
        strict=True,
        gt=0,
        le=MAX_MM_PER_PIXEL,
        allow_inf_nan=False,
        description="the product's scale: adds mm sizes to every region",
    )
    min_area_px: Annotated[int, Field(ge=1, le=MAX_COUNT), NUMBER_ONLY] | None = Field(
        None,
        exclude_if=_unset,
        description="regions smaller than this are specks and dropped (default DCPSFR_MIN_REGION_AREA_PX)",
    )
    max_regions: Annotated[int, Field(ge=0, le=MAX_COUNT), NUMBER_ONLY] | None = Field(
        None,
        exclude_if=_unset,
        description="reject when there are more regions than this",
    )
    max_area_px: float | None = Field(
        None, exclude_if=_unset, strict=True, gt=0, allow_inf_nan=False, description="reject a region larger than this"
    )
    max_area_mm2: float | None = Field(
        None, exclude_if=_unset, strict=True, gt=0, allow_inf_nan=False, description="the same in mm² (needs a scale)"
    )
    max_length_mm: float | None = Field(
        None,
        exclude_if=_unset,
        strict=True,
        gt=0,
        allow_inf_nan=False,
        description="reject a region whose box's longer side exceeds this (mm)",
    )
    reject_in: list[Polygon] = Field(default_factory=list, max_length=64, description="any region touching one rejects")
    ignore_in: list[Polygon] = Field(default_factory=list, max_length=64, description="pixels inside never count")

    @field_validator(*MM_LIMITS)
    @classmethod
    def _needs_scale(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("mm_per_pixel") is None:
            raise ValueError(f"{info.field_name} needs the product's scale: set mm_per_pixel too")
        return value

    @model_validator(mode="after")
    def _sets_something(self) -> AcceptanceRules:
        if not sets_something(self.model_dump()):
            raise ValueError(NOTHING_SET)
        return self

    @property
    def has_limits(self) -> bool:
        """Whether any rejecting rule is set (reject_in or a max_*); without one any region rejects."""
        return bool(self.reject_in) or any(getattr(self, name) is not None for name in RULE_NAMES[1:])


@dataclass(frozen=True)
class Judgement:
    """The regions of one inspection and what they decided."""

    regions: RegionSet
    anomalous: bool
    rule: str | None  # the first rule that fired, None when the part passed
    rules_fired: tuple[str, ...]
    in_reject_zone: tuple[bool, ...]  # per region, whether it touches a reject_in polygon


def judge(
    anomaly_map: np.ndarray,
    pixel_threshold: float,
    score_anomalous: bool,
    rules: AcceptanceRules | None,
    min_area_px: int,
) -> Judgement:
    """Regions of one (H, W) anomaly map and the verdict: the threshold rule without `rules`, else the regions'."""
    height, width = anomaly_map.shape
    mask = anomaly_map > pixel_threshold  # (H, W) bool
    if rules is not None and rules.ignore_in:
        mask &= ~polygon_mask(_frozen(rules.ignore_in), width, height)
    if rules is not None and rules.min_area_px is not None:
        min_area_px = rules.min_area_px
    regions = find_regions(anomaly_map, mask, min_area_px)
    if rules is None:
        fired = (THRESHOLD_RULE,) if score_anomalous else ()
        return Judgement(regions, score_anomalous, fired[0] if fired else None, fired, (False,) * len(regions))
    in_zone = _in_reject_zone(regions, rules, width, height)
    fired = tuple(name for name in RULE_NAMES if _fires(name, regions, rules, in_zone))
    if not rules.has_limits and len(regions) > 0:
        fired = (ANY_REGION_RULE,)
    return Judgement(regions, bool(fired), fired[0] if fired else None, fired, in_zone)


def region_json(region: Region, index: int, mm_per_pixel: float | None, in_reject_zone: bool) -> dict[str, Any]:
    """One region as the API shows it (`id` counts from 1 in the sorted order)."""
    view: dict[str, Any] = {
        "id": index + 1,
        "bbox": list(region.bbox),
        "centroid": [round(region.centroid[0], 2), round(region.centroid[1], 2)],
        "area_px": region.area_px,
        "max_value": region.max_value,
        "mean_value": region.mean_value,
        "in_reject_zone": in_reject_zone,
    }
    if mm_per_pixel is not None:
        length_px, width_px = sorted((region.width_px, region.height_px), reverse=True)
        view["area_mm2"] = round(region.area_px * mm_per_pixel**2, 6)
        view["length_mm"] = round(length_px * mm_per_pixel, 6)
        view["width_mm"] = round(width_px * mm_per_pixel, 6)
    return view


def _fires(name: str, regions: RegionSet, rules: AcceptanceRules, in_zone: tuple[bool, ...]) -> bool:
    scale = rules.mm_per_pixel
    if name == "reject_in":
        return any(in_zone)
    if name == "max_regions":
        return rules.max_regions is not None and len(regions) > rules.max_regions
    if name == "max_area_px":
        return rules.max_area_px is not None and any(r.area_px > rules.max_area_px for r in regions.regions)
    if name == "max_area_mm2":
        limit = rules.max_area_mm2
        return limit is not None and scale is not None and any(r.area_px * scale**2 > limit for r in regions.regions)
    if name == "max_length_mm":
        limit = rules.max_length_mm
        return (
            limit is not None
            and scale is not None
            and any(max(r.width_px, r.height_px) * scale > limit for r in regions.regions)
        )
    raise ValueError(f"unknown rule {name!r}")


def _in_reject_zone(regions: RegionSet, rules: AcceptanceRules, width: int, height: int) -> tuple[bool, ...]:
    if not rules.reject_in or len(regions) == 0:
        return (False,) * len(regions)
    zone = polygon_mask(_frozen(rules.reject_in), width, height)  # (H, W) bool
    touched = np.unique(regions.label_image[zone])  # region labels (1-based) with a pixel in the zone
    hit = set(touched[touched > 0].tolist())
    return tuple(i + 1 in hit for i in range(len(regions)))


FrozenPolygons = tuple[tuple[tuple[float, float], ...], ...]


def _frozen(polygons: list[list[Point]]) -> FrozenPolygons:
    return tuple(tuple((float(x), float(y)) for x, y in polygon) for polygon in polygons)


@lru_cache(maxsize=64)
def polygon_mask(polygons: FrozenPolygons, width: int, height: int) -> np.ndarray:
    """(H, W) bool, True inside any polygon (edges included). Cached: a product's frames share one size."""
    canvas = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        draw.polygon(list(polygon), fill=1, outline=1)
    mask = np.array(canvas, dtype=bool)
    mask.flags.writeable = False  # shared through the cache
    return mask
