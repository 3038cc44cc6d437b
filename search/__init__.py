"""Search layer: experiment specs, Optuna suggestions, packing, the driver running packs on Ray.

Imports the trainer; never the service. Results leave through a :class:`search.sink.ResultSink`.
"""
