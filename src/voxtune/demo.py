"""`voxtune demo` / `make demo`: the whole local pipeline on synthesized speech.

Uses espeak-ng when it is installed, else the few clips bundled with the package, so the demo
needs no system packages.
"""

from __future__ import annotations

import shutil

from voxtune.controller.local import AVAILABLE_STEPS, LocalExecutor
from voxtune.data.synth import copy_samples, plan, synthesize
from voxtune.errors import ExitCode
from voxtune.spec import DataSpec, JsonlSource, RunSpec, Settings

DEMO_RUN = "demo"


def run_demo() -> int:
    settings = Settings()
    data_dir = settings.home / "demo-data"
    if shutil.which("espeak-ng"):
        print("synthesizing speech with espeak-ng ...")
        manifest = synthesize(data_dir / "synth", plan(40))
    else:
        print("espeak-ng not found: using the bundled sample clips")
        manifest = copy_samples(data_dir / "samples")
    spec = RunSpec(name=DEMO_RUN, base_model="tiny-random", language="en",
                   steps=list(AVAILABLE_STEPS),
                   data=DataSpec(sources=[JsonlSource(path=manifest)], eval_fraction=0.2))
    executor = LocalExecutor(settings)
    run = executor.folder(DEMO_RUN)
    if run.spec_file.exists() and run.read_spec() != spec:
        shutil.rmtree(run.path)  # the demo run is ours to replace when its recipe changed
    status = executor.submit(spec)
    print(f"\nrun {status.name}: {status.phase}")
    print(f"  run folder:  {run.path}")
    print(f"  manifest:    {run.prepared / 'manifest.jsonl'}")
    print(f"  rejected:    {run.prepared / 'rejected.jsonl'}")
    print(f"  logs:        {run.logs}")
    return ExitCode.OK if status.phase == "Succeeded" else ExitCode.FAILURE
