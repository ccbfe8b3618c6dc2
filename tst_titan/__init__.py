"""tst_titan: Token Superposition Training (Peng, Gigant, Quesnelle, arXiv 2605.06546) on
torchtitan 0.2.2.

Importing the package (torchtitan does, through ``[job] custom_config_module =
"tst_titan.config"``) makes torchtitan usable on CPU-only machines (``tst_titan.cpu``; no-op with
CUDA) and registers the ``tst_<family>`` train specs (``tst_titan.specs``).
"""

from tst_titan import cpu as _cpu

_cpu.apply()

from tst_titan.loss import bag_cross_entropy, bag_weights  # noqa: E402
from tst_titan.specs import register_all as _register_all  # noqa: E402

_register_all()

__all__ = ["bag_cross_entropy", "bag_weights"]
__version__ = "0.1.0"
