"""xalign pipelines."""
