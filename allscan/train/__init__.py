"""The torch side of allscan: architectures with in-graph heatmaps, data, training, export. Never imported by
``allscan run``."""
