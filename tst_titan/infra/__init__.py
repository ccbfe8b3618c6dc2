"""Accommodations of torchtitan 0.2.2: CPU mode (``cpu``), float8 fixes (``float8``), the
whole-config check hook (``config_hook``). Imports torch/torchtitan only; patches act when called."""
