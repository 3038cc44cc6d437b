"""Pure-PyTorch trainer: models, regularizers, optimizers, datasets, the packed training loop.

Knows nothing of Ray, SQL or HTTP.
"""
