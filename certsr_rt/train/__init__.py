"""Fine-tuning of SR generators: median-randomized-smoothing (MRS) and adversarial fine-tuning.

``certsr-rt train`` is the command line; in Python::

    from certsr_rt.train import TrainConfig, train

    result = train(TrainConfig(model="realesr-animevideov3-x4", mode="mrs", hr_dir="data/HR"))
    result.generator_file  # loadable with certsr_rt.models.load_model

Several GPUs (or CPU processes): ``torchrun --nproc_per_node N -m certsr_rt.cli.app train ...``.
See ``docs/training.md``.
"""

from certsr_rt.train.checkpoint import find_latest_state
from certsr_rt.train.config import ADVERSARIAL_MODES, MODES, TrainConfig
from certsr_rt.train.control import LOG_KEYS
from certsr_rt.train.trainer import Trainer, TrainResult, train

__all__ = [
    "ADVERSARIAL_MODES",
    "LOG_KEYS",
    "MODES",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "find_latest_state",
    "train",
]
