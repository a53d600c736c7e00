"""The run: its folder layout, its steps and phases, its status, and how a step is run.

Everything below the executors asks this package, never a string of its own: a new step or
artifact touches this package and the step itself. It imports no executor, no cluster library
and no ML library, so every image (step, controller, UI) can carry it.
"""
