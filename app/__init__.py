"""Shared core: configuration, models, services and storage. Imports neither web nor tasks."""
