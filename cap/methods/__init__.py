"""The methods, by name: what prompts each puts on a CLIP backbone and how it trains.

``METHODS[name].train(config, source, backbone, run_dir, stop_after)`` returns the results of
one run (metrics, history, timings); :func:`cap.experiments.runs.run` wraps it into a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cap.config import METHOD_NAMES, METHOD_TITLES
from cap.errors import UnknownNameError
from cap.methods.baselines import train_cpl, train_fpl, train_grip, train_zero_shot
from cap.methods.cap import train_cap


@dataclass(frozen=True)
class Method:
    name: str
    prompt: str  # prompts on the open_clip backbone: "maple" (CAP) or "coop" (the baselines)
    train: Callable[..., dict]

    @property
    def title(self) -> str:
        return METHOD_TITLES[self.name]


METHODS = {m.name: m for m in (
    Method("zero_shot", "coop", train_zero_shot),
    Method("fpl", "coop", train_fpl),
    Method("grip", "coop", train_grip),
    Method("cpl", "coop", train_cpl),
    Method("cap", "maple", train_cap),
)}
assert tuple(METHODS) == METHOD_NAMES, "cap.config.METHOD_NAMES must list the registered methods"


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UnknownNameError("method", name, METHODS)
    return METHODS[name]


__all__ = ["METHODS", "Method", "get_method"]
