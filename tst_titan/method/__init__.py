"""The paper's method with no torchtitan state: the phase schedule, bagging a token window, the
bag-mean embedding and the bag loss. Imports torch, torchtitan's plain cross-entropy and job_config."""

from tst_titan.method.embedding import bag_mean, install_bag_embedding
from tst_titan.method.loss import bag_cross_entropy, bag_cross_entropy_reference, bag_weights
from tst_titan.method.schedule import PhaseSchedule, switch_step

__all__ = ["PhaseSchedule", "bag_cross_entropy", "bag_cross_entropy_reference", "bag_mean",
           "bag_weights", "install_bag_embedding", "switch_step"]
