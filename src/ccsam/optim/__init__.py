"""Optimisation schedules (pure functions of explicit counters)."""

from ccsam.optim.schedules import adversarial_weight, learning_rate

__all__ = ["adversarial_weight", "learning_rate"]
