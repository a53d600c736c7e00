"""Executors: local (subprocesses) and, later, Kubernetes (FineTuneRun → Jobs)."""
