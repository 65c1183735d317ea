"""Trainables: one module per model, plus the pieces they share."""
