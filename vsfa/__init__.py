"""VSFA toolkit: Visual Self-Fulfilling Alignment, trained and explained."""

from vsfa import env as _env

_env.apply_offline_defaults()

__version__ = "0.1.0"
