"""migkit: plan, apply and verify NVIDIA MIG layouts."""

__version__ = "0.1.0"
