"""Ops, checkpoint plumbing (restricted unpickler) and small torch helpers. Imports nothing of the
project above it."""
