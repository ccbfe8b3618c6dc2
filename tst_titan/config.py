"""What a torchtitan TOML's ``[job] custom_config_module = "tst_titan.config"`` imports.

torchtitan merges :class:`JobConfig` (the ``[tst]`` section, ``tst_titan.job_config``) into its
own, and importing this module activates the extension (``tst_titan.train_spec.register``): the
``tst_<family>`` train specs that ``model.name`` names in the same TOML, the config checks, and
the CPU accommodations. Example::

    [job]
    custom_config_module = "tst_titan.config"

    [model]
    name = "tst_llama3"

    [tst]
    enable = true
    bag_size = 6                   # the paper's s
    superposition_fraction = 0.3   # the paper's r, a fraction of training.steps
"""

from tst_titan.job_config import TST, JobConfig
from tst_titan.train_spec import register

register()

__all__ = ["JobConfig", "TST"]
