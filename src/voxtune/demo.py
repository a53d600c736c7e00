"""`voxtune demo` / `make demo`: the whole local pipeline on synthesized speech.

Uses espeak-ng when it is installed, else the few clips bundled with the package, so the demo
needs no system packages.
"""

from __future__ import annotations

import shutil

from voxtune.data.synth import copy_samples, plan, synthesize
from voxtune.errors import ExitCode
from voxtune.executors.local import LocalExecutor
from voxtune.publish.registry import Registry
from voxtune.run.layout import registry_dir
from voxtune.run.steps import STEPS
from voxtune.spec import DataSpec, JsonlSource, PublishSpec, RunSpec, Settings, TrainingSpec

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
                   steps=list(STEPS),
                   data=DataSpec(sources=[JsonlSource(path=manifest)], eval_fraction=0.2),
                   # a smoke run: enough steps to see the loss move, seconds on a laptop CPU
                   training=TrainingSpec(max_steps=20, batch_size=4, grad_accum=1,
                                         learning_rate=1e-3, save_steps=10),
                   eval={"max_new_tokens": 32},
                   # to the local registry, with a model card, dataset card and demo Space app
                   publish=PublishSpec(dataset=True, space=True))
    executor = LocalExecutor(settings)
    run = executor.folder(DEMO_RUN)
    if run.spec_file.exists() and run.read_spec() != spec:
        shutil.rmtree(run.path)  # the demo run is ours to replace when its recipe changed
    status = executor.run(spec)
    print(f"\nrun {status.name}: {status.phase} — {status.message}")
    if status.metrics:
        print("  tiny-random is a random smoke-test model: these numbers only show the pipeline")
        print(f"  {'':8} {'base':>8} {'tuned':>8}")
        for metric in ("wer", "cer"):
            print(f"  {metric.upper():8} {status.metrics.get('base_' + metric, float('nan')):8.3f}"
                  f" {status.metrics.get(metric, float('nan')):8.3f}")
    print(f"  run folder:  {run.path}")
    print(f"  manifest:    {run.prepared / 'manifest.jsonl'} (rejected: rejected.jsonl)")
    print(f"  model:       {run.final}")
    registry = Registry(registry_dir(settings.home))
    if registry.versions(DEMO_RUN):
        published = registry.find(DEMO_RUN).path
        print(f"  published:   {published} (card: README.md; Space app: space/)")
    print(f"  metrics:     {run.metrics}")
    print(f"  logs:        {run.logs}")
    print(f"  dashboard:   voxtune dashboard {run.path}")
    return ExitCode.OK if status.phase == "Succeeded" else ExitCode.FAILURE
