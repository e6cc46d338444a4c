"""``allscan bench``: measured throughput of the pipeline against its ceiling and the notebooks' way.

Every claim is a ratio of numbers taken in the same process run on the same images, because the machines this
runs on are shared and noisy. One job per module:

- :mod:`imageset`: which images, materialised as folders of symlinks of the wanted size;
- :mod:`stats`: warm-up, repetitions and medians;
- :mod:`pipeline`: ``run_batch`` end to end (and the rerun with nothing new), with its per-stage costs;
- :mod:`bare`: the runner alone on pre-made batches (the ceiling);
- :mod:`naive`: the research notebooks' way (PIL, torchvision transforms, torch eager at batch 1);
- :mod:`rss` and :mod:`child`: peak memory of a pipeline run in a subprocess, at 1x and 10x the images;
- :mod:`system`: CPU count and GPU name;
- :mod:`targets`: the issue's targets checked against a result;
- :mod:`suite`: the plan (full or quick) and the whole measurement, returning one JSON-ready dict.
"""
