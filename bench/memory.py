"""The resource plan against measurement: peak training memory of Voxtral geometries on CPU.

    .venv/bin/python bench/memory.py                 # every geometry × mode × checkpointing
    .venv/bin/python bench/memory.py --only v120m     # one geometry

For each case a fresh process builds a randomly initialised VoxtralForConditionalGeneration of
that geometry (fp32, real audio window: 30 s → 375 audio tokens, real 131 k vocabulary for the
larger ones), adapts it with voxtune's own `adapt` (LoRA on the language model, or full with the
encoder frozen), and runs AdamW steps on one batch of the length the plan assumes
(`plan.memory.sequence_tokens`: the longest sequence the spec's data bounds allow). It prints the
peak resident memory the training added over the process after imports, next to the plan's
figure for the same setup (`plan.memory.estimate`, device "cpu": everything but the CUDA
context), and their ratio. Each step accumulates two micro-batches, as the recipe does by
default, so gradients and the next micro-batch's activations are live together. The goal is
measured/plan within 0.75–1.25.

The upstream recipe has no memory model to compare with (it trains and sees); the ratio here is
against voxtune's own prediction, which is what `voxtune plan` and the admission checks use.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from voxtune.plan.geometry import Geometry
from voxtune.plan.memory import GIB, Setup, estimate, sequence_tokens

STEPS = 2  # the peak comes once AdamW's states exist (step 2 on)
ACCUMULATE = 2  # micro-batches per step, as the recipe's default (4) accumulates


def geometry(audio_hidden: int, audio_layers: int, hidden: int, intermediate: int, layers: int,
             heads: int, kv_heads: int, vocab: int) -> Geometry:
    return Geometry(audio_hidden=audio_hidden, audio_intermediate=4 * audio_hidden,
                    audio_layers=audio_layers, audio_heads=max(audio_hidden // 64, 1),
                    mel_bins=128, audio_positions=1500, hidden=hidden,
                    intermediate=intermediate, layers=layers, heads=heads, kv_heads=kv_heads,
                    head_dim=hidden // heads, vocab=vocab)


GEOMETRIES = {  # name → shapes, from tiny to ~300 M parameters
    "v20m": geometry(128, 2, 256, 768, 4, 4, 2, 32768),
    "v80m": geometry(256, 2, 512, 1536, 6, 8, 2, 65536),
    "v150m": geometry(256, 4, 768, 2048, 8, 12, 4, 65536),
    "v300m": geometry(384, 4, 1024, 2816, 8, 16, 4, 131072),
}


def setup(mode: str, checkpointing: bool, batch: int) -> Setup:
    return Setup(mode=mode, compute_bytes=4, batch_size=batch, grad_accum=ACCUMULATE,
                 gradient_checkpointing=checkpointing, freeze_audio_encoder=True, lora_rank=8,
                 lora_mlp=False, lora_projector=False, gpus=0, max_duration=30.0,
                 max_chars_per_second=30.0, max_transcript_tokens=512, keep_checkpoints=2,
                 device="cpu")


def config_of(g: Geometry) -> dict:
    return {"audio_token_id": 24,
            "audio_config": {"hidden_size": g.audio_hidden,
                             "intermediate_size": g.audio_intermediate,
                             "num_hidden_layers": g.audio_layers,
                             "num_attention_heads": g.audio_heads, "num_mel_bins": g.mel_bins,
                             "max_source_positions": g.audio_positions},
            "text_config": {"hidden_size": g.hidden, "intermediate_size": g.intermediate,
                            "num_hidden_layers": g.layers, "num_attention_heads": g.heads,
                            "num_key_value_heads": g.kv_heads, "head_dim": g.head_dim,
                            "vocab_size": g.vocab}}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def measure(case: dict) -> dict:
    """Runs in its own process: build, adapt, train STEPS steps; peak RSS over the baseline."""
    import torch
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    from voxtune.spec import TrainingSpec
    from voxtune.train.adapt import adapt

    torch.manual_seed(0)
    g = Geometry(**case["geometry"])
    s = Setup(**case["setup"])
    baseline = peak_rss_gib()  # torch, transformers, peft imported
    model = VoxtralForConditionalGeneration(VoxtralConfig(**config_of(g)))
    parameters = sum(p.numel() for p in model.parameters())  # before adapters are added
    training = TrainingSpec(gradient_checkpointing=s.gradient_checkpointing)
    model = adapt(model, s.mode, training)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if s.mode == "lora":
            model.enable_input_require_grads()
    model.train()
    length = sequence_tokens(g, s)
    audio_tokens = 375
    ids = torch.randint(100, g.vocab, (s.batch_size, length))
    ids[:, 3:3 + audio_tokens] = 24  # the [AUDIO] placeholders the encoder output replaces
    features = torch.randn(s.batch_size, 128, 3000)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, foreach=False)
    started = time.perf_counter()
    for _ in range(STEPS):
        for _ in range(s.grad_accum):
            loss = model(input_ids=ids, input_features=features, labels=ids).loss
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - started) / STEPS
    return {"measured_gib": peak_rss_gib() - baseline, "seconds_per_step": seconds,
            "parameters": parameters,
            "trainable": sum(p.numel() for p in trainable), "tokens": length * s.batch_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(GEOMETRIES))
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a case, run in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return 0
    rows = []
    print(f"{'geometry':8} {'params':>8} {'mode':5} {'ckpt':4} {'tokens':>6} {'plan GiB':>9} "
          f"{'measured':>9} {'ratio':>6} {'s/step':>7}")
    for name, g in GEOMETRIES.items():
        if args.only and name != args.only:
            continue
        for mode in ("lora", "full"):
            for checkpointing in (False, True):
                s = setup(mode, checkpointing, args.batch_size)
                plan = estimate(g, s)
                case = {"geometry": asdict(g), "setup": asdict(s)}
                done = subprocess.run([sys.executable, __file__, "--one", json.dumps(case)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{name}: {mode} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    return 1
                result = json.loads(done.stdout.strip().splitlines()[-1])
                assert result["parameters"] == g.total_parameters, (name, result)
                assert result["trainable"] == plan.parameters_trainable, (name, mode, result)
                planned = plan.gpu_total_gib
                ratio = result["measured_gib"] / planned
                rows.append({"geometry": name, "mode": mode, "checkpointing": checkpointing,
                             "plan_gib": planned, **result, "ratio": ratio,
                             "breakdown_gib": plan.gpu})
                print(f"{name:8} {g.total_parameters / 1e6:7.0f}M {mode:5} "
                      f"{'on' if checkpointing else 'off':4} {result['tokens']:>6} "
                      f"{planned:9.2f} {result['measured_gib']:9.2f} {ratio:6.2f} "
                      f"{result['seconds_per_step']:7.1f}", flush=True)
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"worst deviation from the plan: {100 * worst:.0f}% (goal ≤ 25%); "
          f"rows saved to {out / 'memory.json'}; plan bytes assume {GIB} per GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
