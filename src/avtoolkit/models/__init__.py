"""Whole networks built from encoders, fusion blocks and heads (no Lightning, no dataset knowledge)."""
