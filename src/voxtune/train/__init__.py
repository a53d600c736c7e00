"""Train step: load Voxtral, batch prepared clips, fine-tune (LoRA or full), evaluate."""
