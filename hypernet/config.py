"""Configuration of the hypernetwork, its document encoder and its loss weights (plain dataclasses)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hyperprag.core.fields import from_known_fields

ARCHS = ("hyperlora", "dyprag", "perceiver", "outer", "memory")
TOKEN_ARCHS = ("perceiver", "outer", "memory")
"""Architectures that read per-layer token states (EncoderSpec kind "tokens") instead of one vector."""
ENCODER_KINDS = ("sentence", "llm", "tokens")
POOLINGS = ("last", "mean")
PARAM_LOSSES = ("coord", "deltaw")
KL_POSITIONS = ("answer", "all")
TOKEN_STATES = ("residual", "memory")
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")


@dataclass
class HyperNetConfig:
    """Size and initialization of the network that maps a document embedding to every LoRA matrix."""

    arch: str = "hyperlora"
    """hyperlora (pooled vector -> shared trunk + basis heads) | dyprag (pooled vector -> one MLP per layer and
    module) | perceiver (per-layer token states -> cross-attention, hypernet/token_model.py) | outer (token
    states -> an r x r outer-product mix of learned bases per layer) | memory (down_proj only: slots of
    (down_proj input, next-token embedding) pairs read from the document, a fast-weight copy memory)."""
    emb_dim: int | None = None
    """Document-embedding width; None = taken from the encoder (384 for MiniLM, hidden size for an LLM)."""
    hidden: int = 256
    """Trunk width h (hyperlora)."""
    trunk_layers: int = 2
    """Residual MLP blocks in the shared trunk (hyperlora)."""
    basis: int = 128
    """K: atoms in each module type's learned output basis; A rows and B columns are combinations of them."""
    mean_adapter: bool = True
    """Learn a document-independent adapter (per layer and module) that generated matrices are added to."""
    dropout: float = 0.0
    """Dropout on the projected document embedding and inside the trunk."""
    a_init_scale: float = 1.0
    """RMS of the first generated A (document part), in units of the A output scale (PEFT's 1/sqrt(3*in))."""
    b_scale: float = 1e-3
    """Output scale of B (a trained teacher's B RMS; `calibrate` sets it from teachers). The network works
    in units of it, so AdamW's fixed-size steps suit B's tiny values as well as A's."""
    b_init: float = 0.1
    """RMS of the first generated B, in units of b_scale: small (near-zero first deltas), nonzero (A learns)."""
    calibrate: bool = True
    """Set the A/B output scales from the training teachers' RMS before the first step."""
    dyprag_hidden: int = 32
    """Bottleneck width of each per-(layer, module) MLP of the DyPRAG baseline (their default 32)."""
    dyprag_init: str = "paper"
    """DyPRAG baseline init: paper (every weight N(0, 1e-7), as published) | scaled (PEFT-like A, small B)."""
    latent_dim: int = 256
    """perceiver: width of the queries and of the projected document tokens."""
    heads: int = 4
    """perceiver: attention heads of each cross-attention block."""
    blocks: int = 2
    """perceiver: cross-attention blocks (queries attend over the layer's tokens, then an MLP)."""
    bias_rank: int = 2
    """perceiver / outer: rank slots of a learned document-independent adapter; the adapter's remaining
    spec.rank - bias_rank slots are generated from the document."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"HyperNetConfig.arch {self.arch!r} is not one of {ARCHS}")
        if self.dyprag_init not in ("paper", "scaled"):
            raise ValueError(f"HyperNetConfig.dyprag_init {self.dyprag_init!r} is not 'paper' or 'scaled'")
        for name in ("hidden", "basis", "dyprag_hidden", "latent_dim", "heads", "blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"HyperNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.bias_rank < 0:
            raise ValueError(f"HyperNetConfig.bias_rank must be >= 0, got {self.bias_rank}")
        if self.trunk_layers < 0:
            raise ValueError(f"HyperNetConfig.trunk_layers must be >= 0, got {self.trunk_layers}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HyperNetConfig:
        return from_known_fields(cls, d)


@dataclass
class EncoderSpec:
    """Which document encoder makes the hypernetwork's input (recorded with a trained hypernetwork)."""

    kind: str = "sentence"
    """sentence (bundled all-MiniLM-L6-v2, 384-d) | llm (the base model's own hidden state, pooled) | tokens
    (the base model's per-layer token states: layer l's input feeds layer l's adapter)."""
    layer: int = -1
    """llm: index into hidden_states (0 = embeddings, -1 = last layer after the final norm)."""
    pooling: str = "mean"
    """llm: mean over real tokens | last (the last real token, as DyPRAG does)."""
    max_length: int = 512
    """llm / tokens: longest document in tokens (longer ones are truncated)."""
    token_states: str = "residual"
    """tokens: residual (each adapted layer's input, for perceiver / outer) | memory (each layer's down_proj
    input and the next token's embedding, for the memory network)."""
    compute_dtype: str = "float32"
    """llm / tokens: precision of the frozen base pass that reads the documents: float32 | bfloat16 (autocast,
    ~2x faster where the hardware multiplies bf16 natively, states within ~1e-2) | auto (bfloat16 on such
    hardware, float32 elsewhere). The states handed on are float32 either way."""

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"EncoderSpec.kind {self.kind!r} is not one of {ENCODER_KINDS}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"EncoderSpec.pooling {self.pooling!r} is not one of {POOLINGS}")
        if self.token_states not in TOKEN_STATES:
            raise ValueError(f"EncoderSpec.token_states {self.token_states!r} is not one of {TOKEN_STATES}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"EncoderSpec.compute_dtype {self.compute_dtype!r} is not one of {COMPUTE_DTYPES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderSpec:
        return from_known_fields(cls, d)


@dataclass
class LossWeights:
    """Weights of the training losses (each is also logged on its own, weighted or not)."""

    param: float = 1.0
    """Parameter loss against the teacher LoRA (coordinate or delta-W form, see `param_loss`)."""
    kl: float = 1.0
    """KL(teacher-adapted || student-adapted) next-token distributions on the document's QA sequences."""
    lm: float = 1.0
    """Cross-entropy of the answer tokens with the generated adapter applied."""
    ctx: float = 0.0
    """KL(base model with the document in its prompt || student closed-book) at the answer tokens
    (in-context distillation; needs the data module's `context_kl`)."""
    anchor: float = 0.0
    """KL(base || base with the generated adapter) over general questions that are not about the document,
    answered by the base model itself (keeps answers the document has nothing to say about; needs the
    module's `anchors`)."""

    def to_dict(self) -> dict:
        return asdict(self)
