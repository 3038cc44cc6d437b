"""FastAPI service, persistence and the runner; knows nothing of tensors."""
