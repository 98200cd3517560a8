"""The CLIP architecture (ResNet or ViT image tower, Transformer text tower) in OpenAI's parameter layout.

Module and parameter names follow OpenAI's released checkpoints exactly, so their state dicts load
as they are. `encode_image` / `encode_text` return the usual pooled, projected embeddings;
`encode_image_dense` is the one entry point for per-patch features (what DepthCLIP reads).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    """ResNet bottleneck; a stride is done by average pooling before the 1x1 expansion (anti-aliased)."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a (B, C, h, w) map to (B, output_dim): the mean token attends to all positions, one QKV layer."""

    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim=None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim) / embed_dim ** 0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim or embed_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(2).permute(2, 0, 1)  # (hw, B, C)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)  # (1 + hw, B, C)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False)
        return x.squeeze(0)  # (B, output_dim)

    def value_map(self, x):
        """(B, C, h, w) -> (B, output_dim, h, w): each position through the value and output projections only.

        This is the attention pool with its attention removed (no query, key or positional embedding),
        as MaskCLIP reads dense CLIP features.
        """
        x = x.permute(0, 2, 3, 1)  # (B, h, w, C)
        return self.c_proj(self.v_proj(x)).permute(0, 3, 1, 2)


class ModifiedResNet(nn.Module):
    """CLIP's ResNet: a three-convolution stem with average pooling, anti-aliased strides, attention pooling."""

    def __init__(self, layers, output_dim, heads, input_resolution=224, width=64):
        super().__init__()
        self.output_dim = output_dim
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)

        inplanes = width
        for stage, blocks in enumerate(layers):
            planes, stride = width * 2 ** stage, 1 if stage == 0 else 2
            stage_blocks = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            stage_blocks += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stage_blocks))

        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def trunk(self, x):
        """(B, 3, H, W) -> layer4 output (B, 32 * width, H/32, W/32), before attention pooling."""
        x = x.type(self.conv1.weight.dtype)
        for conv, bn in [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]:
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.attnpool(self.trunk(x))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, so fp16 weights stay stable."""

    def forward(self, x):
        return super().forward(x.type(torch.float32)).type(x.dtype)


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, d_model * 4)),
            ("gelu", QuickGELU()),
            ("c_proj", nn.Linear(d_model * 4, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        self.attn_mask = attn_mask

    def attention(self, x):
        L = x.shape[0]  # the text tower may run on fewer positions than its mask was built for (causal: exact)
        mask = None if self.attn_mask is None else self.attn_mask[:L, :L].to(dtype=x.dtype, device=x.device)
        return self.attn(x, x, x, need_weights=False, attn_mask=mask)[0]

    def forward(self, x):  # x: (L, B, D)
        x = x + self.attention(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def value_path(self, x):
        """(L, B, D) -> (L, B, D): out_proj(V(ln_1(x))) per token; no attention mixing, residual or MLP."""
        width = x.shape[-1]
        v_weight = self.attn.in_proj_weight[2 * width:]
        v_bias = self.attn.in_proj_bias[2 * width:]
        return self.attn.out_proj(F.linear(self.ln_1(x), v_weight, v_bias))

    def maskclip(self, x):
        """(L, B, D) -> (L, B, D): the block with attention replaced by the value path, residual and MLP kept,
        as MaskCLIP computes it (chongzhou96/MaskCLIP, TransformerEncoderLayer.forward with return_qkv)."""
        v = x + self.value_path(x)
        return v + self.mlp(self.ln_2(v))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


def resize_positional_embedding(pos, grid, new_grid):
    """(1 + h * w, width) class + grid positions -> (1 + h' * w', width): the grid part resized bicubically."""
    if tuple(grid) == tuple(new_grid):
        return pos
    resized = pos[1:].T.reshape(1, -1, *grid).float()
    resized = F.interpolate(resized, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], resized.reshape(pos.shape[1], -1).T.to(pos.dtype)])


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def positional_embedding_for(self, grid_h, grid_w):
        """(1 + grid_h * grid_w, width): the grid part resized bicubically to another patch grid."""
        side = self.input_resolution // self.patch_size
        return resize_positional_embedding(self.positional_embedding, (side, side), (grid_h, grid_w))

    def tokens(self, x, layers=None):
        """(B, 3, H, W) -> (1 + h*w, B, width) after the first `layers` blocks (all by default)."""
        x = self.conv1(x.type(self.conv1.weight.dtype))  # (B, width, h, w)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # (B, hw, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding_for(h, w).to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)  # (1 + hw, B, width)
        for block in self.transformer.resblocks[:layers]:
            x = block(x)
        return x

    def forward(self, x):
        return self.ln_post(self.tokens(x)[0]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, embed_dim, image_resolution, vision_layers, vision_width, vision_patch_size,
                 context_length, vocab_size, transformer_width, transformer_heads, transformer_layers):
        super().__init__()
        self.context_length = context_length
        if isinstance(vision_layers, (tuple, list)):
            self.visual = ModifiedResNet(layers=vision_layers, output_dim=embed_dim, heads=vision_width * 32 // 64,
                                         input_resolution=image_resolution, width=vision_width)
        else:
            self.visual = VisionTransformer(input_resolution=image_resolution, patch_size=vision_patch_size,
                                            width=vision_width, layers=vision_layers, heads=vision_width // 64,
                                            output_dim=embed_dim)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads,
                                       attn_mask=self.causal_mask())
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def causal_mask(self):
        """Additive (L, L) mask: each text position sees itself and the positions before it."""
        return torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        """(B, 3, R, R) -> (B, embed_dim), the pooled image embedding."""
        return self.visual(image.type(self.dtype))

    def encode_text(self, text):
        """(B, context_length) token ids -> (B, embed_dim), read at each sequence's end token."""
        return self.encode_token_embeddings(self.token_embedding(text), text.argmax(dim=-1))

    def encode_token_embeddings(self, embeddings, eot):
        """(B, L, width) token embeddings, (B,) end-token positions -> (B, embed_dim).

        The text tower from its input embeddings on: each row of `embeddings` is a token's embedding (a word's
        token_embedding row, or a learned vector in its place, as prompt learning does), positional embedding
        added, the causal transformer, ln_final, read at the end token, projected. L <= context_length: the tower
        is causal, so positions after the last end token change nothing and may be left out.
        """
        L = embeddings.shape[1]
        x = embeddings.type(self.dtype) + self.positional_embedding[:L].type(self.dtype)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # (B, L, width)
        x = self.ln_final(x).type(self.dtype)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection

    @property
    def dense_features(self):
        """The `features` encode_image_dense accepts for this image tower."""
        return ("trunk", "value", "maskclip") if isinstance(self.visual, ModifiedResNet) else ("tokens", "value",
                                                                                              "maskclip")

    def encode_image_dense(self, image, features="trunk"):
        """(B, 3, H, W) -> per-patch features (B, C, H/s, W/s), s = 32 (ResNet) or the ViT patch size.

        features:
          "trunk"    (ResNet) layer4 output, C = 32 * width (2048 for RN50), not projected: DepthCLIP's input.
          "value"    C = embed_dim. ResNet: c_proj(v_proj(f)) at each layer4 position. ViT: the last block's
                     out_proj(V(ln_1(x))) for each patch token (no residual, no MLP), then ln_post and proj.
          "maskclip" C = embed_dim, MaskCLIP's features. ResNet: as "value". ViT: the last block with its
                     attention replaced by the value path, v = x + out_proj(V(ln_1(x))), v = v + mlp(ln_2(v)),
                     then ln_post and proj.
          "tokens"   (ViT) C = embed_dim: the last layer's patch tokens through ln_post and proj.
        H and W must be multiples of s.
        """
        if features not in self.dense_features:
            kind = "ResNet" if isinstance(self.visual, ModifiedResNet) else "ViT"
            raise ValueError(f"features={features!r} is not available for a {kind} CLIP; use one of "
                             f"{', '.join(self.dense_features)}")
        image = image.type(self.dtype)
        if isinstance(self.visual, ModifiedResNet):
            trunk = self.visual.trunk(image)
            return trunk if features == "trunk" else self.visual.attnpool.value_map(trunk)
        h, w = image.shape[-2] // self.visual.patch_size, image.shape[-1] // self.visual.patch_size
        if features == "tokens":
            x = self.visual.tokens(image)
        else:
            blocks = self.visual.transformer.resblocks
            last = blocks[-1].value_path if features == "value" else blocks[-1].maskclip
            x = last(self.visual.tokens(image, layers=len(blocks) - 1))
        patches = self.visual.ln_post(x[1:]) @ self.visual.proj  # (hw, B, embed_dim)
        return patches.permute(1, 2, 0).reshape(image.shape[0], -1, h, w)

    def forward(self, image, text):
        image_features = F.normalize(self.encode_image(image), dim=1)
        text_features = F.normalize(self.encode_text(text), dim=1)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


def convert_weights(model: nn.Module):
    """Cast convolution, linear, attention and projection weights to fp16, as OpenAI's GPU models are.

    BatchNorm and LayerNorm parameters stay float32.
    """
    def to_half(module):
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.half()
            if module.bias is not None:
                module.bias.data = module.bias.data.half()
        if isinstance(module, nn.MultiheadAttention):
            for name in ["in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                         "in_proj_bias", "bias_k", "bias_v"]:
                tensor = getattr(module, name)
                if tensor is not None:
                    tensor.data = tensor.data.half()
        for name in ["text_projection", "proj"]:
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.half()

    model.apply(to_half)


def _count_blocks(state_dict, prefix):
    return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})


def model_config(state_dict: dict):
    """CLIP's constructor arguments, read off a state dict's key names and shapes (ResNet or ViT)."""
    if "visual.proj" in state_dict:
        vision_width, _, vision_patch_size, _ = state_dict["visual.conv1.weight"].shape
        vision_layers = _count_blocks(state_dict, "visual.transformer.resblocks.")
        grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
    else:
        vision_layers = tuple(_count_blocks(state_dict, f"visual.layer{i}.") for i in (1, 2, 3, 4))
        vision_width = state_dict["visual.layer1.0.conv1.weight"].shape[0]
        vision_patch_size = None
        output_width = round((state_dict["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = output_width * 32
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return dict(embed_dim=state_dict["text_projection"].shape[1], image_resolution=image_resolution,
                vision_layers=vision_layers, vision_width=vision_width, vision_patch_size=vision_patch_size,
                context_length=state_dict["positional_embedding"].shape[0],
                vocab_size=state_dict["token_embedding.weight"].shape[0], transformer_width=transformer_width,
                transformer_heads=transformer_width // 64,
                transformer_layers=_count_blocks(state_dict, "transformer.resblocks."))


def build_model(state_dict: dict):
    """Build the CLIP the state dict's shapes describe, cast it to fp16 (as OpenAI does), load the weights."""
    model = CLIP(**model_config(state_dict))
    state_dict = {k: v for k, v in state_dict.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    convert_weights(model)
    model.load_state_dict(state_dict)
    return model.eval()
