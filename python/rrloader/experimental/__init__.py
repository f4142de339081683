"""rrloader's mirror of rerun-sdk's ``rerun.experimental`` namespace.

``rrloader.experimental.dataloader`` is ``rerun.experimental.dataloader`` (rerun-sdk 0.41), name
for name: code written for it runs on rrloader by changing the import prefix ``rerun.`` to
``rrloader.``.
"""
