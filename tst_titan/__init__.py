"""tst_titan: Token Superposition Training (Peng, Gigant, Quesnelle, arXiv 2605.06546) on
torchtitan 0.2.2.

Importing the package gives the method (``bag_cross_entropy``, ``bag_mean``) and changes nothing
in torchtitan. A training run activates the extension through ``[job] custom_config_module =
"tst_titan.config"``, which registers the ``tst_<family>`` train specs and applies the
accommodations in ``tst_titan.infra`` (see ``tst_titan.train_spec.register``).

Layers, each importing only those before it: ``job_config``, ``run_files`` -> ``method`` ->
``datastore`` -> ``infra`` -> ``components`` -> ``flavors``, ``train_spec``, ``config`` ->
``analysis``, ``export``, ``experiments`` -> ``tools``.
"""

from tst_titan.method import bag_cross_entropy, bag_mean, bag_weights

__all__ = ["bag_cross_entropy", "bag_mean", "bag_weights"]
__version__ = "0.1.0"
