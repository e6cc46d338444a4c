"""allscan: batch ALL classification of blood-smear images with heatmaps and trustworthy tables."""

__version__ = "0.1.0"
