"""spnkit on real MNIST: ``spnkit fit mnist``, ``spnkit inpaint`` and ``spnkit classify mnist``.

Installing this package adds the three subcommands to the ``spnkit`` command
line (entry-point group ``spnkit.commands``); ``python -m spnkit_mnist`` runs
them too.
"""

__all__: list[str] = []
