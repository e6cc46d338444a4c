"""File formats: image decoding, CSV tables with their column schema, heatmap PNGs."""
