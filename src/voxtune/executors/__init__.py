"""Executors: where a run's steps go. Each backend is one module implementing
`voxtune.executors.protocol.Executor`; `voxtune.Client` is written against that protocol."""
