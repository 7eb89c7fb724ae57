"""A model ready to steer: loaded offline, its tokenizer, its architecture, prompt batches, determinism, provenance."""
