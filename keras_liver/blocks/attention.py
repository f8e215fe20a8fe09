"""Attention blocks shared across papers, rank-generic."""
from __future__ import annotations

from keras import layers

from keras_liver import ndim
from keras_liver.blocks.conv import apply_conv_bn, apply_conv_bn_relu
from keras_liver.blocks.residual import apply_preact_residual_unit
from keras_liver.layers import ChannelAttention


def apply_channel_attention(x, *, name: str):
    """Channel attention (RA V-Net CA module, §2.4): ``E = β·softmax(A Aᵀ) A + A``, β₀ = 0.

    One :class:`~keras_liver.layers.ChannelAttention` layer named ``name`` (e.g. ``skip4_ca``).
    """
    return ChannelAttention(name=name)(x)


def apply_attention_residual_module(x, *, depth: int, p: int = 1, t: int = 2, r: int = 1,
                                    name: str):
    """Attention residual module (Wang et al. 2017, "Residual Attention Network"; RA-UNet
    §III-D3, Eq. 2, Fig. 4), as the RA-UNet authors' ``attention_block`` builds it.

    Every unit is :func:`~keras_liver.blocks.residual.apply_preact_residual_unit` at the input's
    width C, which is kept throughout:

    - ``p`` units → x (``{name}_pre{i}``);
    - trunk branch T = ``t`` units on x (``{name}_trunk{i}``);
    - soft mask branch on x: MaxPool 2 (``same``) → ``r`` units (level 1); then ``depth``
      times: skip_i = 1 unit on the current map, MaxPool 2 → ``r`` units (level i + 1);
      decoder, deepest skip first: ``r`` units → nearest up-sampling ×2 → add skip_i; then
      ``r`` units → up-sampling ×2 → Conv 1×1 (C, linear) → Conv 1×1 (C, linear) → sigmoid = M;
    - (1 + M) ⊙ T (Eq. 2) → ``p`` units (``{name}_post{i}``).

    ``depth`` is the paper's D (Fig. 4b): the number of skip connections inside the soft mask,
    so the mask pools ``depth + 1`` times (the authors' ``encoder_depth`` is ``depth + 1``).
    1 + M is a ``Rescaling(scale=1, offset=1)`` layer where the authors' code has a ``Lambda``:
    one layer each, so the layer count is the same.

    Layers: ``{name}_pre{i}_*``, ``{name}_trunk{i}_*``, ``{name}_mask_pool{l}``,
    ``{name}_mask_down{l}_res{j}_*`` (l = 1 … depth + 1), ``{name}_mask_skip{l}_*``,
    ``{name}_mask_up{l}_res{j}_*``, ``{name}_mask_up{l}`` (up-sampling from level l),
    ``{name}_mask_add{l}`` (l = 1 … depth), ``{name}_mask_conv1``, ``{name}_mask_conv2``,
    ``{name}_mask_sigmoid``, ``{name}_mask_plus_one``, ``{name}_multiply``,
    ``{name}_post{i}_*``.
    """
    if not isinstance(depth, int) or depth < 0:
        raise ValueError(f"{name}: depth must be an int >= 0; received depth={depth!r}")
    rank = ndim.rank_of(x)
    channels = int(x.shape[-1])

    def units(y, count, prefix):
        for j in range(1, count + 1):
            y = apply_preact_residual_unit(y, channels, name=f"{prefix}{j}")
        return y

    x = units(x, p, f"{name}_pre")
    trunk = units(x, t, f"{name}_trunk")

    # Soft mask branch: encoder.
    mask = ndim.max_pool(rank, 2, padding="same", name=f"{name}_mask_pool1")(x)
    mask = units(mask, r, f"{name}_mask_down1_res")
    skips = []
    for level in range(1, depth + 1):
        skips.append(apply_preact_residual_unit(mask, channels,
                                                name=f"{name}_mask_skip{level}"))
        mask = ndim.max_pool(rank, 2, padding="same", name=f"{name}_mask_pool{level + 1}")(mask)
        mask = units(mask, r, f"{name}_mask_down{level + 1}_res")
    # Soft mask branch: decoder, deepest skip first.
    for level in range(depth, 0, -1):
        mask = units(mask, r, f"{name}_mask_up{level + 1}_res")
        mask = ndim.upsampling(rank, 2, name=f"{name}_mask_up{level + 1}")(mask)
        mask = layers.Add(name=f"{name}_mask_add{level}")([mask, skips[level - 1]])
    mask = units(mask, r, f"{name}_mask_up1_res")
    mask = ndim.upsampling(rank, 2, name=f"{name}_mask_up1")(mask)
    mask = ndim.conv(rank, channels, 1, name=f"{name}_mask_conv1")(mask)
    mask = ndim.conv(rank, channels, 1, name=f"{name}_mask_conv2")(mask)
    mask = layers.Activation("sigmoid", name=f"{name}_mask_sigmoid")(mask)

    # Attention residual learning (Eq. 2): (1 + M) ⊙ T.
    gate = layers.Rescaling(scale=1.0, offset=1.0, name=f"{name}_mask_plus_one")(mask)
    y = layers.Multiply(name=f"{name}_multiply")([gate, trunk])
    return units(y, p, f"{name}_post")


def apply_attention_gate(x, g, inter_filters: int, *, name: str):
    """Additive attention gate (Oktay et al. 2018, "Attention U-Net"), rank-generic.

    ``x`` is the skip connection (the features to gate), ``g`` the gating signal from the
    decoder, already at ``x``'s spatial size (the common "g = up-sampled decoder map" form used
    by the Attention Residual UNet authors, MONAI and keras-unet-collection):

    θ_x = Conv 1×1 (F_int)-BN on x; φ_g = Conv 1×1 (F_int)-BN on g; ReLU(θ_x + φ_g) →
    ψ = Conv 1×1 (1)-BN → sigmoid = α (the attention coefficients, one per voxel, in [0, 1]);
    output α ⊙ x (same shape as x). Every conv keeps its bias.

    Layers: ``{name}_theta_x_{conv,bn}``, ``{name}_phi_g_{conv,bn}``, ``{name}_add``,
    ``{name}_relu``, ``{name}_psi_{conv,bn}``, ``{name}_psi_sigmoid`` (α),
    ``{name}_multiply``.
    """
    rank = ndim.rank_of(x)
    if ndim.rank_of(g) != rank or tuple(g.shape[1:-1]) != tuple(x.shape[1:-1]):
        raise ValueError(f"{name}: the gating signal g must have x's spatial size; received "
                         f"x of shape {tuple(x.shape)} and g of shape {tuple(g.shape)}")
    if not isinstance(inter_filters, int) or inter_filters < 1:
        raise ValueError(f"{name}: inter_filters (F_int) must be an int >= 1; "
                         f"received inter_filters={inter_filters!r}")
    theta_x = apply_conv_bn(x, inter_filters, 1, name=f"{name}_theta_x")
    phi_g = apply_conv_bn(g, inter_filters, 1, name=f"{name}_phi_g")
    f = layers.Add(name=f"{name}_add")([theta_x, phi_g])
    f = layers.Activation("relu", name=f"{name}_relu")(f)
    alpha = apply_conv_bn_relu(f, 1, 1, activation="sigmoid", name=f"{name}_psi")
    return layers.Multiply(name=f"{name}_multiply")([x, alpha])
