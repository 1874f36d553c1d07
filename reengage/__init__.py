"""ReenGAGE reproduction harness: goal-conditioned Q-learning as knowledge distillation."""

__version__ = "0.1.0"
