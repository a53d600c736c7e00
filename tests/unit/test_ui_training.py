"""The Train page without a browser: its plan (voxtune.plan, full-size shapes from the shipped
configs), the choices it offers, the learning rate by mode, and Launch refusing what cannot fit.

Runs go to the Kubernetes API emulator, where the host memory is the pod's (unknown to the UI),
so the verdicts here are the GPUs' alone; the local backend is checked against this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulators import kube
from tests.emulators.kube import KubeEmulator
from tests.helpers import speechlike, write_audio
from voxtune.client import Client
from voxtune.errors import UserError
from voxtune.plan import GpuProfile
from voxtune.spec import LEARNING_RATES, RunSpec
from voxtune.ui import hardware, training
from voxtune.ui.demo import DemoServers
from voxtune.ui.handlers import Context
from voxtune.ui.settings import UiSettings
from voxtune.ui.training import AUTO_PROFILE, TrainForm

kube_emulator = kube.kube_emulator
MINI, SMALL = training.BASE_MODELS[:2]


@pytest.fixture
def ctx(kube_emulator: KubeEmulator, voxtune_home: Path) -> Context:
    client = Client("kubernetes", namespace="default", api_client=kube_emulator.api_client(),
                    home=voxtune_home)
    return Context(client, UiSettings(), voxtune_home, DemoServers(voxtune_home / "ui"))


def with_dataset(ctx: Context, user: str = "alice") -> None:
    workspace = ctx.workspace(user)
    workspace.add(write_audio(ctx.home / "in" / "a.wav", speechlike(1.0)), "a clip", "en")
    workspace.add(write_audio(ctx.home / "in" / "b.wav", speechlike(1.5, seed=1)), "another",
                  "en")
    workspace.build("en")


def test_small_24b_full_fine_tuning_is_never_offered_on_one_gpu(ctx: Context) -> None:
    offered = training.offer(ctx, TrainForm(base_model=SMALL, mode="full", gpus="1 GPU"))
    assert "full" not in offered.modes and offered.form.mode == offered.modes[0] == "lora"
    assert offered.plan is not None and offered.plan.fits


def test_qlora_is_offered_only_with_a_gpu(ctx: Context) -> None:
    on_cpu = training.offer(ctx, TrainForm(base_model=MINI, mode="qlora", gpus="CPU only"))
    assert "qlora" not in on_cpu.modes and on_cpu.form.mode == "lora"
    assert on_cpu.profiles == [AUTO_PROFILE]  # no GPU: nothing to pick
    assert "qlora" in training.offer(ctx, TrainForm(base_model=MINI, gpus="1 GPU")).modes


def test_only_profiles_that_hold_the_run_are_offered(ctx: Context) -> None:
    offered = training.offer(ctx, TrainForm(base_model=MINI, mode="full", gpus="1 GPU",
                                            gpu_profile="24gb"))
    assert "24gb" not in offered.profiles and "141gb" in offered.profiles
    assert offered.form.gpu_profile == AUTO_PROFILE  # 24gb was ruled out: the smallest fitting
    assert offered.plan is not None and offered.plan.profile is not None
    assert offered.plan.profile.name in offered.profiles and offered.plan.fits


def test_the_plan_panel_shows_memory_disk_and_verdict(ctx: Context) -> None:
    offered = training.offer(ctx, TrainForm(base_model=MINI, gpus="1 GPU", gpu_profile="48gb"))
    text = training.plan_text(offered.plan, offered.problem)
    assert text.startswith("**Plan: fits** on 1 × 48gb")
    assert "| memory per GPU |" in text and "44.5 GiB (48gb)" in text
    assert "| host RAM |" in text and "| disk |" in text


def test_a_model_without_a_known_config_gets_no_plan_and_every_choice(ctx: Context) -> None:
    offered = training.offer(ctx, TrainForm(base_model=str(ctx.home / "no-such-model")))
    assert offered.plan is None and offered.problem
    assert offered.modes == list(training.MODES)
    assert training.plan_text(offered.plan, offered.problem).startswith("**No plan**")


def test_launch_refuses_a_run_that_does_not_fit_with_the_advice(
        ctx: Context, kube_emulator: KubeEmulator) -> None:
    with_dataset(ctx)
    form = TrainForm(name="big", base_model=SMALL, mode="full", gpus="1 GPU")
    with pytest.raises(UserError, match=r"does not fit.*mode: lora"):
        training.launch(ctx, "alice", form)
    assert kube_emulator.list("finetuneruns", "default") == []


@pytest.mark.parametrize(("form", "rate"), [
    (TrainForm(mode="lora"), LEARNING_RATES["lora"]),
    (TrainForm(mode="full"), LEARNING_RATES["full"]),
    (TrainForm(mode="full", learning_rate=3e-6), 3e-6),
], ids=["lora-default", "full-default", "given"])
def test_an_empty_learning_rate_is_the_modes_default(ctx: Context, form: TrainForm,
                                                     rate: float) -> None:
    with_dataset(ctx)
    assert training.build_spec(ctx, "alice", form).training.learning_rate == rate


@pytest.mark.parametrize(("gpus", "profile", "expected"), [
    ("1 GPU", "80gb", ("80gb", 1)),
    ("2 GPUs", AUTO_PROFILE, (None, 2)),
    ("CPU only", "80gb", (None, 0)),
], ids=["named", "smallest-that-fits", "cpu"])
def test_the_gpu_choice_is_count_times_profile(ctx: Context, gpus: str, profile: str,
                                               expected: tuple[str | None, int]) -> None:
    with_dataset(ctx)
    spec = training.build_spec(ctx, "alice", TrainForm(gpus=gpus, gpu_profile=profile))
    assert (spec.resources.gpu_profile, spec.resources.gpus) == expected


def test_local_runs_are_planned_against_this_machines_memory(voxtune_home: Path) -> None:
    ctx = Context(Client("local", home=voxtune_home), UiSettings(), voxtune_home,
                  DemoServers(voxtune_home / "ui"))
    assert ctx.host_memory_gib is not None and ctx.host_memory_gib > 0
    # Small-24B on the CPU needs its whole training state in RAM (≈138 GiB)
    cpu = training.plan_of(ctx, RunSpec(name="plan", base_model=SMALL, resources={"gpus": 0}))
    assert cpu.host_limit_gib == ctx.host_memory_gib
    assert not cpu.fits and cpu.advice
    assert f"| {ctx.host_memory_gib:.0f} GiB |" in training.plan_text(cpu)
    # a machine without GPUs is offered no GPU (a local run could not use one) ...
    ctx.local_gpus = []
    offered = training.offer(ctx, TrainForm(base_model=SMALL, mode="lora", gpus="1 GPU"))
    assert offered.gpus == ["CPU only"] and offered.form.gpus == "CPU only"
    assert "CPU only, " in training.hardware_text(ctx)
    # ... and one with an 80 GB GPU moves off CPU only to it, planned against that GPU
    ctx.local_gpus = [GpuProfile(name="NVIDIA H100 80GB HBM3", memory_gib=79.6)]
    offered = training.offer(ctx, TrainForm(base_model=SMALL, mode="lora", gpus="CPU only"))
    assert offered.gpus == ["1 GPU"] and offered.form.gpus == "1 GPU"
    assert offered.plan is not None and offered.plan.fits
    assert offered.plan.profile == ctx.local_gpus[0] and offered.profiles == [AUTO_PROFILE]
    assert "NVIDIA H100 80GB HBM3 (79.6 GiB)" in training.hardware_text(ctx)
    assert "CPU only" in training.offer(ctx, TrainForm(base_model="tiny-random")).gpus


def test_gpus_are_detected_with_nvidia_smi(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "nvidia-smi"  # what the real one prints for these query flags
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771'\necho 'NVIDIA H200, [N/A]'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert hardware.detect_gpus() == [GpuProfile(name="NVIDIA H200", memory_gib=140.4)]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert hardware.detect_gpus() == []
