"""Shoal's scheduler: Swarm-style filters + spread strategy, as pure functions."""
from shoal.core.constraints import (Constraint, ConstraintError, node_matches, parse_constraint,
                                         parse_constraints, validate_constraints)
from shoal.scheduler.pipeline import SchedulingResult, schedule

__all__ = ["Constraint", "ConstraintError", "node_matches", "parse_constraint", "parse_constraints",
           "validate_constraints", "SchedulingResult", "schedule"]
