"""Observation: what a generation's decoder blocks actually changed, whoever wrote the steering.

Observer-only hooks record what each block received in every forward pass; after the generation each block is
run again on exactly that input, with no hook of anyone's active, and its result is compared with what the next
module received. May import arms (the steering vocabulary), models and support; nothing here edits a hidden state.
"""
