"""Tiers of the training experiments: one configuration field picks a preset of defaults.

A training experiment reproduces a paper at GPU scale (``tier="full"``, the field defaults:
the paper's protocol), at about 20 minutes on 2 CPU cores (``tier="middle"``: the paper's
weight decay, learning rate, loss and schedule on fewer images or a narrower network), or in
seconds (``tier="quick"``, what ``--quick`` selects: hyperparameters may differ, and each claim
says why). ``collapselab run NAME --set tier=middle`` picks the middle tier; any other
``--set key=value`` still overrides a single field of the chosen tier.

A subclass lists its presets in ``TIERS = {"middle": {...}, "quick": {...}}``; the values a
user gives explicitly win over the preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ._base import ExperimentConfig

__all__ = ["TieredConfig", "quick_not_applicable"]


class TieredConfig(ExperimentConfig):
    """An experiment configuration with a ``tier`` field selecting a preset of field defaults."""

    TIERS: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    tier: Literal["full", "middle", "quick"] = Field("full", description="full: the paper's protocol (GPU); middle: ~20 min on 2 CPU cores; quick: seconds (--quick)")

    @model_validator(mode="before")
    @classmethod
    def _tier_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            preset = cls.TIERS.get(str(data.get("tier", "full")), {})
            return {**preset, **data}
        return data


def quick_not_applicable(ctx: Any, cfg: TieredConfig, unsupported: Mapping[str, str], cid: str, claim: str, source: str, reference: str) -> bool:
    """Record claim ``cid`` as not applicable when the quick tier is too small to test it.

    unsupported: ``{claim id: why}``, the claims the experiment does not test in the quick
    tier (they stay tested in the middle and full tiers). Returns True when the claim was
    recorded, so the caller skips its test.
    """
    if cfg.tier != "quick" or cid not in unsupported:
        return False
    ctx.claim_not_applicable(cid, claim, source, why=f"not tested in the quick tier (tested in the middle and full tiers): {unsupported[cid]}", reference=reference)
    return True
