"""The concept simulator: CLIP-like features with known, planted concept mismatch and confusion.

``make_problem(preset, seed)`` generates one simulated dataset (:mod:`cap.sim.generator`, step by
step); ``preset_config`` gives a preset's parameters (:mod:`cap.sim.presets`).
"""

from cap.sim.generator import make_problem
from cap.sim.presets import SimConfig, preset_config, preset_names
from cap.sim.problem import SimProblem

__all__ = ["SimConfig", "SimProblem", "make_problem", "preset_config", "preset_names"]
