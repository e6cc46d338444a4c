"""``allscan evaluate``: honest numbers measured through the inference path (``run_batch``), scored with
scikit-learn. What ships is what is measured."""
