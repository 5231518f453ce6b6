"""Pre-norm transformer blocks; attention through the fastest kernel per device.

On GPUs, attention runs through ``scaled_dot_product_attention`` (flash /
memory-efficient kernels). On the CPU, the sequences of this model are short
(128 tokens per 10 s clip, about 64 visible in pretraining), and there PyTorch's
fused CPU kernel is several times slower than two batched matmuls and a softmax,
mostly in its backward (see ``docs/performance.md``), so the CPU uses
``explicit_attention``. Padding is a boolean key mask (True = attend).

Authors
 * BEST-RQ-2 SpeechBrain contributors
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample in training.

    Arguments
    ---------
    prob : float
        Probability of dropping the branch.

    Example
    -------
    >>> DropPath(0.5).eval()(torch.ones(2, 3)).sum().item()
    6.0
    """

    def __init__(self, prob: float = 0.0):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scales kept samples by ``1 / (1 - prob)`` and zeroes the others."""
        if self.prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        scale = x.new_empty(shape).bernoulli_(keep) / keep  # one pass over x
        return x * scale


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d)) v`` as two batched matmuls and a softmax.

    Same result as ``F.scaled_dot_product_attention`` up to rounding: under
    bf16 autocast the scores and weights are stored in bf16 (the softmax
    accumulates in fp32), as in the usual non-fused ViT attention. Faster than
    the fused kernel on the CPU for short sequences. The scores take
    ``batch x heads x seq x seq`` memory.

    Arguments
    ---------
    q, k, v : torch.Tensor
        (batch, heads, seq, head_dim) queries, keys and values.
    key_mask : torch.Tensor, optional
        (batch, seq) bool, True on keys to attend to (at least one per row).

    Returns
    -------
    torch.Tensor
        (batch, heads, seq, head_dim), the dtype of ``v``.

    Example
    -------
    >>> q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    >>> mask = torch.tensor([[True, True, True, False, False]] * 2)
    >>> ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None])
    >>> torch.allclose(explicit_attention(q, k, v, mask), ref, atol=1e-6)
    True
    """
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return torch.matmul(scores.softmax(dim=-1), v)


class SelfAttention(nn.Module):
    """Multi-head self-attention (``explicit_attention`` on CPU, else SDPA).

    Arguments
    ---------
    dim : int
        Model width.
    num_heads : int
        Number of heads.
    qkv_bias : bool
        Bias on the query/key/value projection.

    Example
    -------
    >>> attn = SelfAttention(32, 4)
    >>> attn(torch.randn(2, 5, 32)).shape
    torch.Size([2, 5, 32])
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attends over (batch, seq, dim); ``key_mask`` (batch, seq) True = real."""
        batch, seq, dim = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if x.device.type == "cpu":
            out = explicit_attention(q, k, v, key_mask)
        else:
            attn_mask = None if key_mask is None else key_mask[:, None, None, :]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(batch, seq, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``.

    Arguments
    ---------
    dim : int
        Model width.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        Hidden width of the MLP relative to ``dim``.
    drop_path : float
        Stochastic depth probability of both residual branches.
    norm_eps : float
        LayerNorm epsilon.

    Example
    -------
    >>> block = Block(32, 4)
    >>> block(torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0]] * 2).bool()).shape
    torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Applies the block to (batch, seq, dim)."""
        x = x + self.drop_path(self.attn(self.norm1(x), key_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerStack(nn.Module):
    """A stack of pre-norm blocks with a final LayerNorm.

    Drop-path rises linearly from 0 at the first block to ``drop_path`` at the last.

    Arguments
    ---------
    dim : int
        Model width.
    depth : int
        Number of blocks.
    num_heads : int
        Attention heads.
    mlp_ratio : float
        MLP hidden width relative to ``dim``.
    drop_path : float
        Stochastic depth of the last block.
    norm_eps : float
        LayerNorm epsilon.

    Example
    -------
    >>> stack = TransformerStack(32, depth=2, num_heads=4)
    >>> out, hiddens = stack(torch.randn(2, 5, 32), return_hiddens=True)
    >>> out.shape, len(hiddens)
    (torch.Size([2, 5, 32]), 3)
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, rate, norm_eps) for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        return_hiddens: bool = False,
    ):
        """Runs the stack.

        Arguments
        ---------
        x : torch.Tensor
            (batch, seq, dim) input tokens.
        key_mask : torch.Tensor, optional
            (batch, seq) bool, True on real tokens.
        return_hiddens : bool
            Also return the input and every block's output (``depth + 1``
            tensors); the last one is taken after the final LayerNorm.

        Returns
        -------
        torch.Tensor or (torch.Tensor, list of torch.Tensor)
            The normalised output, and the hidden states when requested.
        """
        hiddens = [x]
        for block in self.blocks:
            x = block(x, key_mask)
            hiddens.append(x)
        x = self.norm(x)
        if not return_hiddens:
            return x
        hiddens[-1] = x
        return x, hiddens


def compile_blocks(module: nn.Module, **options) -> int:
    """Compiles every :class:`TransformerStack` inside ``module`` in place.

    Each stack (its blocks and final LayerNorm) becomes one ``torch.compile``
    graph: LayerNorms, GELUs, residual adds and the autocast weight casts are
    fused around the matmuls and attention, and the host launches a few large
    graphs per step instead of every block's kernels one by one. The masking,
    gathers and quantizer around the stacks stay eager. A new token count
    recompiles once, after which the shapes are dynamic.

    Arguments
    ---------
    module : torch.nn.Module
        A model holding transformer stacks (encoder, predictor, a whole
        pretraining model).
    **options
        Passed to ``torch.compile`` (``mode``, ``dynamic``, ...).

    Returns
    -------
    int
        The number of blocks compiled.

    Example
    -------
    >>> stack = TransformerStack(32, depth=2, num_heads=4)
    >>> compile_blocks(stack)
    2
    """
    stacks = [m for m in module.modules() if isinstance(m, TransformerStack)]
    # All stacks share ``TransformerStack.forward``; dynamo keys its cache on
    # that code, with entries per stack and per call pattern (masks, hiddens).
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, 4 * len(stacks) + 8)
    for stack in stacks:
        stack.compile(**options)
    return sum(len(stack.blocks) for stack in stacks)


def init_vit_weights(module: nn.Module) -> None:
    """Trunc-normal(0.02) for Linear and Conv weights, zero biases, LayerNorm 1/0.

    Example
    -------
    >>> layer = nn.Linear(4, 4)
    >>> layer.apply(init_vit_weights) is layer
    True
    >>> float(layer.bias.detach().abs().sum())
    0.0
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
