"""Tune retrieval on your own data: image–text pairs → WebDataset shards → CLIP LoRA → recall@k → use."""
