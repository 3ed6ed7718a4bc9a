"""The hypernetwork (DyPRAG-style student): document embedding -> every LoRA matrix of the base model.

config.py (dataclass configs), model.py (HyperLoRA, DyPRAGBaseline), losses.py (parameter, KL and answer
losses), encoders.py (document encoders + embedding cache), checkpoint.py (save/load a trained network).
Depends only on hyperprag.core; Lightning training lives in training/hypernet_*.py.
"""
