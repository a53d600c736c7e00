"""Imported by every Python process started with this folder on PYTHONPATH: in torchrun's
ranks (LOCAL_RANK set) it lets accelerate use FSDP on CPU (tests/fsdp_on_cpu.py says why);
the harness and torchrun itself are left alone."""

import os

if os.environ.get("LOCAL_RANK") is not None:
    from tests.fsdp_on_cpu import lift_accelerate_cpu_gate

    lift_accelerate_cpu_gate()
