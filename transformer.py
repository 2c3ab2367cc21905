"""The causal code Transformer (CodeGPT) and its sampling, with its attention building blocks: multi-head
self-attention, pre-norm blocks, positional encodings."""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sin/cos encodings [length, dim]; any length works, so convolutional models stay length-free."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)     # as pos and freq, whatever the default
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


_ROPE: dict = {}


def rotary(x: torch.Tensor, offset: int) -> torch.Tensor:
    """Rotary position embedding of [B, H, T, D] at positions offset..offset+T-1: attention scores
    then depend on relative offsets, which suits copying the previous beat at any lag."""
    T, D = x.shape[2], x.shape[3]
    key = (D, x.device, x.dtype)
    if key not in _ROPE or _ROPE[key][0].shape[0] < offset + T:  # tables grow on demand, reused afterwards
        n = max(2 * (offset + T), 256)
        # ordinary tensors even when first built under torch.inference_mode: autograd cannot save inference
        # tensors, so a forecast made so would stop every later training step of the session
        with torch.inference_mode(False):
            freq = 1.0 / (10000 ** (torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D))
            angle = torch.arange(n, device=x.device, dtype=torch.float32)[:, None] * freq
            _ROPE[key] = (angle.cos().to(x.dtype), angle.sin().to(x.dtype))
    cos, sin = (t[offset:offset + T] for t in _ROPE[key])
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention on [B, T, C] with scaled_dot_product_attention (flash kernels on GPU)."""

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0, rope: bool = False):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} must be divisible by heads {heads}"
        self.heads, self.causal, self.dropout, self.rope = heads, causal, dropout, rope
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cache: dict | None = None, offset: int = 0) -> torch.Tensor:
        """With `cache` (a dict filled across calls) x holds only new positions, starting at
        `offset`: keys and values of earlier positions are reused instead of recomputed."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        if self.rope:
            q, k = rotary(q, offset), rotary(k, offset)
        if cache is not None:
            k, v = self._cached(cache, k, v, offset)
        causal, mask = self.causal and T > 1, None
        if causal and k.shape[2] != T:      # new queries attend to every cached key and causally among themselves
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    @staticmethod
    def _cached(cache: dict, k: torch.Tensor, v: torch.Tensor, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new keys/values into buffers allocated once (cache['size'] positions) instead of
        concatenating every step, and return all keys/values so far."""
        end = offset + k.shape[2]
        held = cache["k"].shape[2] if "k" in cache else 0
        if end > held:  # first call, or a cache without a size: grow (doubling) and keep what is there
            size = max(cache.get("size", end), end, 2 * held)
            grown = [t.new_empty((*t.shape[:2], size, t.shape[3])) for t in (k, v)]
            if held:
                grown[0][:, :, :held], grown[1][:, :, :held] = cache["k"], cache["v"]
            cache["k"], cache["v"] = grown
        cache["k"][:, :, offset:end] = k
        cache["v"][:, :, offset:end] = v
        return cache["k"][:, :, :end], cache["v"][:, :, :end]


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0, mlp_ratio: int = 4,
                 rope: bool = False):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal, dropout, rope)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: dict | None = None, offset: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, offset)
        return x + self.mlp(self.ln2(x))


class ConvAttention(nn.Module):
    """Attention blocks for conv feature maps [B, C, T] (sinusoidal positions, so any T works)."""

    def __init__(self, channels: int, heads: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(channels, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        h = h + sinusoidal_positions(h.shape[1], h.shape[2], h.device).to(h.dtype)
        for block in self.blocks:
            h = block(h)
        return h.transpose(1, 2)


def as_levels(codes: torch.Tensor, levels: int) -> torch.Tensor:
    """Codes [B, T] (one codebook) or [B, T, Q] -> [B, T, Q], checked against a model's Q = `levels`;
    the VQ-VAE and the code Transformer both take either layout."""
    out = codes.unsqueeze(-1) if codes.ndim == 2 else codes
    if out.shape[-1] != levels:
        raise ValueError(f"codes {list(codes.shape)} have {out.shape[-1]} codebook levels, the model {levels}: "
                         f"codes are [B, T] (one codebook) or [B, T, Q]")
    return out


def check_code_range(codes: torch.Tensor, size: int, what: str, least: int = 0, whose: str = "") -> None:
    """Refuse codes outside least..size - 1 by name, with one device sync (not two): the VQ-VAE and the code
    Transformer both read codes as indices, where a negative one silently picks from the end and one too large is
    another codebook's (or fails deep in indexing)."""
    if codes.numel():
        lo, hi = torch.stack(torch.aminmax(codes)).tolist()
        if lo < least or hi >= size:
            raise ValueError(f"{what} must be in {least}..{size - 1} ({whose}codebook_size {size}), got {lo}..{hi}")


class CodeGPT(nn.Module):
    """Decoder-only Transformer over VQ-VAE code sequences, one position per code step (both leads).

    Rotary or learned positions, pre-norm causal blocks, output head tied to the token embedding,
    and a key/value cache so generating H steps costs H small forward passes instead of H full ones.
    With `levels` residual codebooks a step's Q codes enter as the sum of their embeddings and leave
    through a small depth head that draws them coarse to fine, each given the ones before it (as in
    RQ-Transformer): a step still costs one pass of the Transformer, whatever Q is.

    With `draft`, each position also reads a draft of the step it predicts: codes of a guess at the
    future (the seasonal-naive continuation of the context, or the context's beats at given or drawn beat
    times: drafts.py, coded in forecast.py), or -1 where there is none. Copying the draft is then one attention-free
    step, so the model spends its capacity on where to depart from it.
    """

    def __init__(self, codebook_size: int, block_size: int, dim: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.1, rope: bool = True, levels: int = 1, draft: bool = False):
        super().__init__()
        self.codebook_size, self.block_size, self.levels = codebook_size, block_size, levels
        self.tok = nn.Embedding(codebook_size * levels, dim)    # level q's codes at q * codebook_size + code
        self.pos = None if rope else nn.Embedding(block_size, dim)
        self.draft = nn.Linear(dim, dim) if draft else None
        self.no_draft = nn.Parameter(torch.zeros(dim)) if draft else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, causal=True, dropout=dropout, rope=rope) for _ in range(layers))
        self.depth = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim)) if levels > 1 else None
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, codebook_size * levels, bias=False)
        self.head.weight = self.tok.weight
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def embed(self, levels: torch.Tensor) -> torch.Tensor:
        """Sum of the embeddings of codes [..., q] of levels 0..q-1."""
        shift = torch.arange(levels.shape[-1], device=levels.device) * self.codebook_size
        return self.tok(levels + shift).sum(-2)

    def embed_draft(self, draft: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | float:
        """Embeddings of next-step drafts [B, T(, Q)] (-1: none); 0 for a model without drafts."""
        if self.draft is None:
            return 0.0
        if draft is None:
            return self.no_draft.expand(*shape[:2], -1)
        levels = as_levels(draft, self.levels)
        none = levels[..., :1] < 0
        return torch.where(none, self.no_draft, self.draft(self.embed(levels.clamp(min=0))))

    def hidden(self, codes: torch.Tensor, caches: list[dict] | None = None, offset: int = 0,
               last_only: bool = False, draft: torch.Tensor | None = None) -> torch.Tensor:
        """Transformer output [B, T, dim] for code steps [B, T(, Q)] at positions offset..offset+T-1
        ([B, 1, dim], the last position's, with `last_only`: generation needs no others). `draft`
        [B, T(, Q)]: the draft of the step each position predicts (see the class docstring)."""
        T = codes.shape[1]
        if offset + T > self.block_size:
            raise ValueError(f"sequence of {offset + T} code steps exceeds block_size {self.block_size}")
        h = self.embed(as_levels(codes, self.levels)) + self.embed_draft(draft, codes.shape)
        if self.pos is not None:
            h = h + self.pos(torch.arange(offset, offset + T, device=codes.device))
        h = self.drop(h)
        for i, block in enumerate(self.blocks):
            h = block(h, caches[i] if caches is not None else None, offset)
        return h[:, -1:] if last_only else h

    def level_logits(self, h: torch.Tensor, level: int, lower: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [..., codebook_size] of the next step's code of `level` from hidden states h [..., dim],
        given that step's codes of the levels below, `lower` [..., level]."""
        if level:
            h = h + self.embed(lower)
            h = h + self.depth(h)
        k = self.codebook_size
        return F.linear(self.ln(h), self.head.weight[level * k:(level + 1) * k])

    def forward(self, codes: torch.Tensor, draft: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits [B, T-1, Q, codebook_size] of steps 1..T-1 of codes [B, T(, Q)];
        `draft` [B, T(, Q)] is aligned with the codes (step t's draft, -1: none)."""
        levels = as_levels(codes, self.levels)
        h = self.hidden(levels[:, :-1], draft=None if draft is None else draft[:, 1:])
        target = levels[:, 1:]
        return torch.stack([self.level_logits(h, q, target[..., :q]) for q in range(self.levels)], -2)

    def sample_step(self, h: torch.Tensor, temperature: float, top_k: int, top_p: float,
                    generator: torch.Generator | None, prefer: torch.Tensor | None = None,
                    bias: float = 0.0) -> torch.Tensor:
        """The next step's Q codes [N, Q] from hidden states [N, dim], coarse to fine. `prefer` [N, Q]
        (the step's draft codes, -1: none) gains `bias` in log-odds after the temperature: bias * temperature
        before it, which must be a finite number of the logits' dtype. Beyond float32's 3.4e38 (bias 2 at
        temperature 2e38) masked_fill stopped in 'value cannot be converted to type float without overflow'; at an
        infinite temperature the draft codes' logits were inf / inf = NaN and every row drew the last code; an
        infinite bias at temperature 0 was NaN, and greedy sampling took the draft codes it should ignore."""
        bonus = bias * temperature
        codes = torch.empty(len(h), self.levels, dtype=torch.long, device=h.device)
        for q in range(self.levels):
            logits = self.level_logits(h, q, codes[:, :q])
            if bias and prefer is not None:
                if not abs(bonus) <= torch.finfo(logits.dtype).max:     # `not <=`: a NaN is refused too
                    raise ValueError(f"draft_bias {bias} at temperature {temperature}: the draft codes' logits "
                                     f"would gain bias * temperature = {bonus:g} before the temperature divides them, "
                                     f"no finite {str(logits.dtype).removeprefix('torch.')} (at most "
                                     f"{torch.finfo(logits.dtype).max:g})")
                logits = favour(logits, prefer[:, q], bonus)
            codes[:, q] = sample_next(logits, temperature, top_k, top_p, generator)
        return codes

    @torch.no_grad()
    def generate(self, context: torch.Tensor, steps: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None, use_cache: bool = True,
                 num_samples: int = 1, draft: torch.Tensor | None = None, draft_bias: float = 0.0) -> torch.Tensor:
        """Sample `steps` code steps after each context [B, T(, Q)], `num_samples` times:
        [B * num_samples, steps(, Q)], a context's samples next to each other. The same generator state
        gives the same codes with or without the cache (up to float rounding of the logits); with it
        the context is read once per context, not once per sample. `draft`: see `_next_drafts`;
        `draft_bias` > 0 tilts each step towards its draft's codes (`sample_step`)."""
        if steps < 0 or num_samples < 1:     # the cache met torch's 'negative dimension', the reference drew nothing
            raise ValueError(f"generate takes steps >= 0 and num_samples >= 1, got steps {steps}, num_samples "
                             f"{num_samples}")
        if context.shape[1] < 1:        # the first step is drawn from the context's last position
            raise ValueError("generate needs a context of at least one code step, got none")
        if context.shape[1] + steps > self.block_size:
            raise ValueError(f"context {context.shape[1]} + {steps} steps exceeds block_size {self.block_size}")
        self.check_codes(context, "context")
        if draft is not None:
            self.check_codes(draft, "draft", least=-1)
        levels = as_levels(context, self.levels)
        nxt, rep, own = self._next_drafts(draft, len(context), context.shape[1], steps, num_samples)
        draw = functools.partial(self.sample_step, temperature=temperature, top_k=top_k, top_p=top_p,
                                 generator=generator, bias=draft_bias)
        if use_cache:
            out = self._generate_cached(levels, steps, draw, num_samples, nxt, rep, own)
        else:
            out = self._generate_uncached(levels.repeat_interleave(num_samples, 0), steps, draw, rep)
        return out if context.ndim == 3 else out[..., 0]

    def check_codes(self, codes: torch.Tensor, what: str, least: int = 0) -> None:
        """Refuse codes outside least..codebook_size - 1 by name: `embed` reads level q's code c at row
        q * codebook_size + c of one table, so a code beyond its codebook (another VQ-VAE's) or a negative one was
        read as a code of another level without a word."""
        check_code_range(codes, self.codebook_size, f"{what} codes", least, "the model's ")

    def _next_drafts(self, draft: torch.Tensor | None, contexts: int, known: int, steps: int, num_samples: int
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, bool]:
        """A checked `draft` [B, known + steps(, Q)] (step t's draft, as in `forward`, shared by a context's samples)
        or [B * num_samples, ...] (one per sample, the same over the `known` context steps, which the cache reads
        once for all samples), shifted to what each position predicts: as given, repeated for every sample, and
        whether it came one per sample. A step's levels are all codes or all -1: `embed_draft` reads level 0."""
        if draft is None:
            return None, None, False
        levels, length = as_levels(draft, self.levels), known + steps
        if ((levels < 0).any(-1) != (levels < 0).all(-1)).any():
            raise ValueError("draft steps must hold codes at every level or -1 at every level; some mix the two")
        nxt = levels[:, 1:]
        if nxt.shape[1] < length - 1:
            raise ValueError(f"draft of {draft.shape[1]} steps, expected context + steps = {length}")
        if len(nxt) not in (contexts, contexts * num_samples):
            raise ValueError(f"draft of {len(nxt)} rows, expected one per context ({contexts}) or per sample "
                             f"({contexts * num_samples})")
        own = num_samples > 1 and len(nxt) == contexts * num_samples
        prefix = nxt[:, :known - 1].unflatten(0, (contexts, -1))
        if own and (prefix != prefix[:, :1]).any():
            raise ValueError("a draft per sample must be the same over the context, which the samples read once; "
                             "give one draft per context, or drafts that differ only past the context")
        return nxt, nxt if own else nxt.repeat_interleave(num_samples, 0), own

    def _generate_uncached(self, seq: torch.Tensor, steps: int, draw: Callable, rep: torch.Tensor | None
                           ) -> torch.Tensor:
        """Each step reads the whole sequence again: the reference the cache must match."""
        T = seq.shape[1]
        for _ in range(steps):
            d = None if rep is None else rep[:, :seq.shape[1]]
            want = None if rep is None else rep[:, seq.shape[1] - 1]
            seq = torch.cat([seq, draw(self.hidden(seq, last_only=True, draft=d)[:, -1], prefer=want)[:, None]], 1)
        return seq[:, T:]

    def _generate_cached(self, levels: torch.Tensor, steps: int, draw: Callable, num_samples: int,
                         nxt: torch.Tensor | None, rep: torch.Tensor | None, own: bool) -> torch.Tensor:
        """The context read once per context into the key/value caches, copied to its samples, then one
        position per step."""
        T = levels.shape[1]
        caches = [{"size": T + steps} for _ in self.blocks]
        shared = T - 1 if own else T          # with a draft per sample, the last context step reads its own
        if shared:
            d = None if nxt is None else nxt[::num_samples if own else 1, :shared]
            h = self.hidden(levels[:, :shared], caches, last_only=True, draft=d)[:, -1]
            h = h.repeat_interleave(num_samples, 0)
            for cache in caches:
                cache["k"], cache["v"] = (cache[key].repeat_interleave(num_samples, 0) for key in ("k", "v"))
        if own:
            h = self.hidden(levels[:, shared:].repeat_interleave(num_samples, 0), caches, offset=shared,
                            last_only=True, draft=rep[:, shared:T])[:, -1]
        out = torch.empty(len(h), steps, self.levels, dtype=levels.dtype, device=levels.device)
        for i in range(steps):
            out[:, i] = draw(h, prefer=None if rep is None else rep[:, T + i - 1])
            if i + 1 < steps:
                d = None if rep is None else rep[:, T + i:T + i + 1]
                h = self.hidden(out[:, i:i + 1], caches, offset=T + i, last_only=True, draft=d)[:, -1]
        return out


def favour(logits: torch.Tensor, codes: torch.Tensor, bonus: float) -> torch.Tensor:
    """logits [N, V] with `bonus` added at each row's code in codes [N] (-1: the row is left alone). The bonus is
    made in the logits' dtype: one of torch's default dtype was rounded in a float16 session."""
    add = torch.zeros(codes.shape, dtype=logits.dtype, device=logits.device).masked_fill(codes >= 0, bonus)[:, None]
    return logits.scatter_add(-1, codes.clamp(min=0)[:, None], add)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """One code per row from logits [B, V] with temperature (0: the likeliest code), top-k and nucleus (top-p)
    truncation (`truncated`)."""
    if not temperature >= 0 or top_k < 0 or not 0 < top_p <= 1:     # `not >=`: a NaN is refused too
        raise ValueError(f"sampling takes temperature >= 0, top_k >= 0 and top_p in (0, 1], got temperature "
                         f"{temperature}, top_k {top_k}, top_p {top_p}")
    if temperature == 0:
        return logits.argmax(-1)
    best = logits.max(-1, keepdim=True).values
    tempered = truncated(logits.float() / temperature, top_k, top_p)
    # so small a temperature that logits reach ±inf (softmax NaN): the limit sampling tends to, the likeliest codes
    # alike (the first of them alone took every exact tie below ~1e-37, split alike at any temperature above)
    overflow = torch.isinf(best.float() / temperature)
    tempered = torch.where(overflow, (logits == best).float().log(), tempered)
    # inverse CDF, one uniform per row (torch.multinomial draws one exponential per code and row);
    # right=True: codes of probability 0 (masked) are never picked, even for u = 0
    cdf = tempered.softmax(-1).cumsum(-1)
    u = torch.rand(len(cdf), 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def truncated(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits [B, V] with -inf outside the top_k likeliest codes (0: all) and outside the nucleus: the fewest
    likeliest codes reaching top_p. Both keep every code tied with the last kept: the set does not depend on
    code order."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits = torch.sort(logits, descending=True, dim=-1).values
        p = sorted_logits.softmax(-1)
        before = F.pad(p.cumsum(-1)[:, :-1], (1, 0))        # the probability of the likelier codes
        kept = (before < top_p).sum(-1, keepdim=True)      # the smallest set reaching top_p (at least one code)
        logits = logits.masked_fill(logits < sorted_logits.gather(-1, kept - 1), float("-inf"))
    return logits
