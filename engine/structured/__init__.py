"""Structured (DarwinLM-style) pruning. Importing this package registers the pruned model type with
transformers' Auto classes, so `AutoModelForCausalLM.from_pretrained` loads exported folders."""

from engine.structured.modeling import register

register()
