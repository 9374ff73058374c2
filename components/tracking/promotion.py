"""Champion/challenger promotion by a metric, with the decision recorded on the model version."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from mlflow.tracking import MlflowClient

from components.errors import ConfigError
from components.tracking.registry import version_for_alias, version_metric


@dataclass(frozen=True)
class Decision:
    """Outcome of one comparison; `promoted` tells whether champion now points at the challenger."""
    model: str
    promoted: bool
    reason: str
    metric: str
    challenger_version: str | None
    challenger_value: float | None
    champion_version: str | None
    champion_value: float | None


def is_better(challenger: float, champion: float, greater_is_better: bool, min_delta: float = 0.0) -> bool:
    """True when the challenger beats the champion by more than `min_delta` in the metric's direction."""
    if math.isnan(challenger):
        return False
    if math.isnan(champion):
        return True
    return challenger > champion + min_delta if greater_is_better else challenger < champion - min_delta


def promote(model: str, metric: str, greater_is_better: bool, force: bool = False, min_delta: float = 0.0,
            challenger_alias: str = "challenger", champion_alias: str = "champion") -> Decision:
    """Move `champion` to the challenger when it is better on `metric` (or when forced); record why."""
    challenger = version_for_alias(model, challenger_alias)
    if challenger is None:
        raise ConfigError(f"model '{model}' has no '@{challenger_alias}' version; run the stage that registers it "
                          f"(e.g. finetune for skindualgen-generator) first")
    champion = version_for_alias(model, champion_alias)
    ch_value = version_metric(challenger, metric)
    if ch_value is None and not force:
        raise ConfigError(f"{model} v{challenger.version} has no figure for '{metric}' (no tag metric.{metric} and "
                          f"no run metric); choose another --metric or evaluate the model first")
    champ_value = version_metric(champion, metric) if champion is not None else None

    if champion is not None and champion.version == challenger.version:
        promoted, reason = False, "challenger is already champion"
    elif force:
        promoted, reason = True, "forced"
    elif champion is None:
        promoted, reason = True, "no champion yet"
    elif champ_value is None:
        promoted, reason = True, f"champion v{champion.version} has no figure for {metric}"
    elif is_better(ch_value, champ_value, greater_is_better, min_delta):
        promoted, reason = True, f"{metric} {ch_value:.6g} beats {champ_value:.6g}"
    else:
        promoted, reason = False, f"{metric} {ch_value:.6g} does not beat {champ_value:.6g}"

    client = MlflowClient()
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tags = {
        "promotion.decision": "promoted" if promoted else "kept_champion",
        "promotion.reason": reason,
        "promotion.metric": metric,
        "promotion.challenger_value": "" if ch_value is None else repr(ch_value),
        "promotion.champion_version": "" if champion is None else str(champion.version),
        "promotion.champion_value": "" if champ_value is None else repr(champ_value),
        "promotion.time": stamp,
    }
    for key, value in tags.items():
        client.set_model_version_tag(model, challenger.version, key, value)
    if promoted:
        client.set_registered_model_alias(model, champion_alias, challenger.version)
    return Decision(model, promoted, reason, metric, str(challenger.version), ch_value,
                    None if champion is None else str(champion.version), champ_value)
