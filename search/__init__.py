"""Search layer: experiment specs, Optuna suggestions, packing, the Ray Tune driver.

Imports the trainer; never the service. Results leave through a :class:`search.sink.ResultSink`.
"""
