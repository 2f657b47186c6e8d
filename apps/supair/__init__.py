"""SuPAIR: attend-infer-repeat with sum-product networks as appearance models.

Stelzner, Peharz and Kersting, "Faster Attend-Infer-Repeat with Tractable
Probabilistic Models", ICML 2019. The model (:class:`~supair.model.Supair`),
AIR as its baseline (:class:`~supair.air.Air`), the scene data
(:mod:`supair.data`), the configuration (:class:`~supair.config.SupairConfig`)
and the training harness (:class:`~supair.train.Trainer`); the command line is
``supair train | detect | show`` (``python -m supair``, ``torchrun -m supair``).
"""

__version__ = "0.1.0"
