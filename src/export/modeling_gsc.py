"""A language model trained by gsc, the Gradual Scaling Compiler, for 🤗 transformers.

    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

This file is gsc's forward pass written with torch, for the variants that no
native transformers architecture expresses (GELU or LayerNorm in a gpt, and
nGPT, the normalised transformer). Parameter names are gsc's checkpoint names
(`layers.0.attn.wq` holds the weight of a torch Linear, hence `.weight`);
nGPT's learned vectors are stored as gsc stores them, and multiplied by the
constant factors of `config.ngpt_scales` where they are used.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class GscConfig(PretrainedConfig):
    model_type = "gsc"

    def __init__(
        self,
        arch="gpt",
        vocab_size=256,
        max_position_embeddings=64,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        intermediate_size=256,
        activation="gelu",
        norm="rmsnorm",
        norm_eps=1e-5,
        rope_theta=10000.0,
        ngpt_scales=None,
        tie_word_embeddings=True,
        **kwargs,
    ):
        self.arch = arch
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.norm = norm
        self.norm_eps = norm_eps
        self.rope_theta = rope_theta
        self.ngpt_scales = ngpt_scales or {}
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


def l2norm(x):
    # No epsilon, as in training: nGPT's vectors never vanish.
    return x / x.norm(dim=-1, keepdim=True)


class Norm(nn.Module):
    """gpt's pre-norm: RMSNorm, or LayerNorm with a bias, times a gain."""

    def __init__(self, config):
        super().__init__()
        self.kind, self.eps = config.norm, config.norm_eps
        self.gain = nn.Parameter(torch.ones(config.hidden_size))
        if self.kind == "layernorm":
            self.bias = nn.Parameter(torch.zeros(config.hidden_size))

    def forward(self, x):
        if self.kind == "layernorm":
            return F.layer_norm(x, x.shape[-1:], self.gain, self.bias, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.gain


def rope(x, base):
    """Rotates coordinate j of every head with j + head_dim/2 by pos·base^(−2j/head_dim)."""
    t, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    pos = torch.arange(t, dtype=torch.float64, device=x.device)[:, None]
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64, device=x.device) / hd)
    theta = pos * inv
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = config
        self.heads, self.kv_heads, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.base, self.ngpt = c.rope_theta, c.arch == "ngpt"
        self.wq = nn.Linear(c.hidden_size, self.heads * self.hd, bias=False)
        self.wk = nn.Linear(c.hidden_size, self.kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(c.hidden_size, self.kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(self.heads * self.hd, c.hidden_size, bias=False)
        if self.ngpt:
            self.s_qk = nn.Parameter(torch.ones(self.heads * self.hd))
            self.alpha = nn.Parameter(torch.ones(c.hidden_size))

    def forward(self, x, scales):
        b, t, _ = x.shape
        split = lambda y, n: y.view(b, t, n, self.hd).transpose(1, 2)
        q = rope(split(self.wq(x), self.heads), self.base)
        k = rope(split(self.wk(x), self.kv_heads), self.base)
        v = split(self.wv(x), self.kv_heads)
        if self.ngpt:
            s = (self.s_qk * scales["attn.s_qk"]).view(1, self.heads, 1, self.hd)
            q, k = l2norm(q), l2norm(k)
            if self.kv_heads == self.heads:
                q, k = q * s, k * s
            else:
                # A kv head serves several query heads, each with its own s_qk:
                # both factors of q·k go on q.
                q = q * s * s
            scale = math.sqrt(self.hd)
        else:
            scale = 1.0 / math.sqrt(self.hd)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        return self.wo(y.transpose(1, 2).reshape(b, t, self.heads * self.hd))


class Mlp(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = config
        self.ngpt, self.gated = c.arch == "ngpt", c.arch == "ngpt" or c.activation == "swiglu"
        self.d = c.hidden_size
        self.w_up = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        if self.gated:
            self.w_gate = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.w_down = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)
        if self.ngpt:
            self.s_u = nn.Parameter(torch.ones(c.intermediate_size))
            self.s_v = nn.Parameter(torch.ones(c.intermediate_size))
            self.alpha = nn.Parameter(torch.ones(c.hidden_size))

    def forward(self, x, scales):
        if self.ngpt:
            u = self.w_up(x) * (self.s_u * scales["mlp.s_u"])
            v = self.w_gate(x) * (self.s_v * scales["mlp.s_v"] * math.sqrt(self.d))
            return self.w_down(u * F.silu(v))
        if self.gated:
            return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        return self.w_down(F.gelu(self.w_up(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ngpt = config.arch == "ngpt"
        if not self.ngpt:
            self.attn_norm, self.mlp_norm = Norm(config), Norm(config)
        self.attn, self.mlp = Attention(config), Mlp(config)

    def forward(self, h, scales):
        if self.ngpt:
            # A step along the sphere: h ← Norm(h + α ⊙ (Norm(y) − h)).
            a = self.attn.alpha * scales["attn.alpha"]
            h = l2norm(h + a * (l2norm(self.attn(h, scales)) - h))
            a = self.mlp.alpha * scales["mlp.alpha"]
            return l2norm(h + a * (l2norm(self.mlp(h, scales)) - h))
        h = h + self.attn(self.attn_norm(h), scales)
        return h + self.mlp(self.mlp_norm(h), scales)


class GscForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = GscConfig
    base_model_prefix = "gsc"
    _no_split_modules = ["Block"]

    def __init__(self, config):
        super().__init__(config)
        c = config
        self.ngpt = c.arch == "ngpt"
        self.tok_emb = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
        if not self.ngpt:
            self.final_norm = Norm(c)
        # A tied head is tok_emb itself (used directly in forward).
        self.untied = self.ngpt or not c.tie_word_embeddings
        if self.untied:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        if self.ngpt:
            self.s_z = nn.Parameter(torch.ones(c.vocab_size))
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_emb

    def set_input_embeddings(self, value):
        self.tok_emb = value

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        # No KV cache: every step runs the whole (context-long) window.
        return {"input_ids": input_ids[:, -self.config.max_position_embeddings :]}

    def forward(self, input_ids, labels=None, **kwargs):
        scales = self.config.ngpt_scales
        h = self.tok_emb(input_ids)
        for block in self.layers:
            h = block(h, scales)
        if not self.ngpt:
            h = self.final_norm(h)
        head = self.lm_head.weight if self.untied else self.tok_emb.weight
        logits = F.linear(h, head)
        if self.ngpt:
            logits = logits * (self.s_z * scales["s_z"])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
            )
        return CausalLMOutput(loss=loss, logits=logits)
