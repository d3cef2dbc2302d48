"""Data sources: tabular (.npz/.csv, synthetic) for classifiers, text for language models."""
