"""`xalign prepare`: the Ray Data pipeline that builds the cross-lingual instruction mixture.

read (validated) -> build (one module per builder) -> filter (language ID, length) -> dedup (exact + MinHash,
per language) -> tokenize (Ray actors, `cluster.prompts`) -> mix (source ratios, language temperature, seed)
-> pack -> Parquet shards + rejects + manifest (the manifest hash is the dataset id).
"""
