"""The service on a Ray cluster (``--cluster ADDRESS``): recognizer and regime shard actors.

Nothing in this package imports Ray at module level except `runtime` and the
modules that need a running cluster (`speech`, `ticks`); without ``--cluster``
the service never imports them, so Ray stays an optional extra
(``pip install 'streamer[cluster]'``). The cores the actors run (`cores`) are
plain classes, tested without Ray. The design and the measured capacity model
are in docs/scaling.md.
"""
