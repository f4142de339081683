"""What both dataloader front ends share (internal).

rrloader has two public front ends over one native engine:

* ``rrloader.dataloader`` (and the ``rrloader`` top level): the seed API generation;
* ``rrloader.experimental.dataloader``: rerun-sdk 0.41's ``rerun.experimental.dataloader``,
  name for name.

Where the generations spell the same thing differently (``Field.window``, missing values,
constructor keywords, the decoder contract) each front end keeps its own meaning and
normalises it, in its own ``Field`` and decoder classes, to what this package and the engine
take: fields as :class:`_config.EngineField` (a window is an explicit list of offsets in the
index's native unit). Everything else lives here once, in modules named after the parts of
rerun's package:

* ``_config``: ``DataSource``, the engine's field description, generation checks;
* ``_sample_index``: ``SampleIndex``, ``FixedRateSampling``, ``SegmentMetadata``;
* ``_shuffle``: shuffle strategies, epoch orders, shards and fetch blocks;
* ``_datasets``: the engine's lifecycle (fork, spawn, DDP topology), iteration and sample
  assembly;
* ``_decoders``: how Python decoders of either generation are called;
* ``_collate``: ``collate_samples``.
"""
