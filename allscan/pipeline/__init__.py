"""The batch pipeline: discover -> decode -> segment -> model input -> infer -> heatmaps -> write."""
