"""Whole-config checks when torchtitan parses a config: one extension of ``ConfigManager``.

torchtitan 0.2.2 has no hook for checking a custom config section against the rest of the config
(``custom_config_module`` only adds dataclasses), so :func:`install` wraps
``ConfigManager._validate_config``, which ``parse_args`` calls last, once per process.
"""

from __future__ import annotations

from typing import Callable

from torchtitan.config.manager import ConfigManager

#: The torchtitan name :func:`install` wraps; a test fails if it disappears.
PATCHED_NAMES = (("torchtitan.config.manager", "ConfigManager._validate_config"),)


def install(check: Callable[[object], None]) -> None:
    """Run ``check(job_config)`` after torchtitan's own validation of every parsed config
    (idempotent: a second call keeps the first check)."""
    original = ConfigManager._validate_config
    if getattr(original, "_tst_titan", False):
        return

    def _validate_config(self) -> None:
        original(self)
        check(self.config)

    _validate_config._tst_titan = True
    ConfigManager._validate_config = _validate_config
