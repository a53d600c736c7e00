"""FSDP on CPU processes, for the tests that train with gloo.

accelerate 1.15 turns its FSDP plugin on only for accelerator process groups: for CPU processes
(`DistributedType.MULTI_CPU`) it drops the plugin and the Trainer trains DDP. torch 2.13's
FSDP2 itself runs on CPU with gloo, so a test rank lifts that one gate (what `AcceleratorState`
does for GPUs, done for CPUs); everything after it is the real path a GPU run takes.
Two ways in: test_fsdp.py runs itself as the torchrun script and calls it; a test that runs a
pod's exact command puts tests/fsdp_on_cpu_site on PYTHONPATH, whose sitecustomize calls it in
every torchrun rank.
"""

from __future__ import annotations


def lift_accelerate_cpu_gate() -> None:
    """Let accelerate use its FSDP plugin for CPU processes, as it does for GPU ones."""
    import accelerate.state as state
    from accelerate.utils import DistributedType

    original = state.AcceleratorState.__init__

    def init(self, mixed_precision=None, cpu=False, dynamo_plugin=None, deepspeed_plugin=None,
             fsdp_plugin=None, *args, **kwargs):
        original(self, mixed_precision, cpu, dynamo_plugin, deepspeed_plugin, fsdp_plugin,
                 *args, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP  # what the GPU branch does
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin

    state.AcceleratorState.__init__ = init
