"""MSA-UNet (Jin et al., "MSA-UNet: a multi-scale attention U-Net for liver segmentation in
CT images", papers/msa_unet.txt) and the ablation variants of its Table 2.

No code was released; the paper's Eq. 1–4 fix the modules and SPEC §3 spells out our reading.
Every choice the paper leaves open is marked ``ASSUMPTION`` here and listed in the fidelity
notes (``docs/fidelity.md``, MSA-UNet).

Paper module → function → layer-name prefix
-------------------------------------------
=======================================  =======================  ==========================
Paper module                             Function / layer         Layer-name prefix
=======================================  =======================  ==========================
MSRB, encoder level k (Eq. 1, Fig. 2)    :func:`apply_msrb`       ``enc{k}_msrb_``
  branch f3 / branch f3∘f3 / f1 of the   (inside MSRB)            ``_b1_``, ``_b2_1_``,
  concat / f1 shortcut / ⊕ / DropBlock                            ``_b2_2_``, ``_concat``,
                                                                  ``_fuse_``, ``_shortcut_``,
                                                                  ``_add``, ``_dropblock``
Max pooling after level k                ``MaxPooling2D``         ``enc{k}_pool``
Bottom MSRB, 16F                         :func:`apply_msrb`       ``bottom_msrb_``
AASPP (Eq. 3, Fig. 4) at the bottom      :func:`apply_aaspp`      ``bottom_aaspp_``
  branch f1 / f3 dilation r, then MSAM   (inside AASPP)           ``bottom_aaspp_rate{r}_``,
  (r = 1, 2, 4, 8); concat; f1                                    ``bottom_aaspp_rate{r}_msam_``,
                                                                  ``bottom_aaspp_concat``,
                                                                  ``bottom_aaspp_fuse_``
MSAM (Eq. 2, Fig. 3)                     :func:`apply_msam`       ``{…}_msam_``
  MaxPool 2/4/8; f3 on Fp8, ×2, + Fp4,   (inside MSAM)            ``_pool{2,4,8}``,
  f3 = Fp4'; f3, ×2, + Fp2, f3 = Fp2';                            ``_p8_conv_``, ``_p8_up``,
  f3, ×2, f1 (linear), σ, ⊗ Fin                                   ``_p4_add``, ``_p4_fuse_``,
                                                                  ``_p4_conv_``, ``_p4_up``,
                                                                  ``_p2_add``, ``_p2_fuse_``,
                                                                  ``_p2_conv_``, ``_p2_up``,
                                                                  ``_mask_conv``,
                                                                  ``_mask_sigmoid``, ``_mul``
RASM, decoder level k (Eq. 4, Fig. 5)    :func:`apply_rasm`       ``dec{k}_rasm_``
  b2(F_high); concat; θ2 = two MSRBs;    (inside RASM)            ``_up``, ``_concat``,
  α = MSAM; f1(F_low); f1(b2(F_high));                            ``_msrb1_``, ``_msrb2_``,
  ⊕ of the three                                                  ``_msam_``, ``_low_``,
                                                                  ``_high_``, ``_add``
Head Conv 1×1 + sigmoid                  ``blocks.apply_head``    ``head_``
U-Net encoder level / bottom (Table 2)   ``_plain_encoder_level`` ``enc{k}_conv{1,2}_``,
                                                                  ``bottom_conv{1,2}_``
U-Net decoder level (Table 2)            ``_plain_decoder_level`` ``dec{k}_upconv``,
                                                                  ``dec{k}_concat``,
                                                                  ``dec{k}_conv{1,2}_``
=======================================  =======================  ==========================

Levels are numbered from the top: ``enc1``/``dec1`` work at the input resolution with
``base_filters`` (F) channels, ``enc{depth}``/``dec{depth}`` at 1/2^(depth−1) with
2^(depth−1)·F, ``bottom`` at 1/2^depth with 2^depth·F (paper: 64, 128, 256, 512 and 1024).
The blocks are rank-generic (2-D and 3-D through :mod:`keras_liver.ndim`); the builders take
2-D ``(H, W, C)`` input, the published model.

Builders and Table 2 (defaults = published configuration: 512×512×1, F = 64, 4 poolings,
sigmoid head, He-normal kernels, DropBlock block 7 / rate 0.1)
-----------------------------------------------------------------------------------------
============  ========================  =================  =============================
Table 2 row   Builder                   ``ABLATIONS`` key  Encoder / bottom / decoder
============  ========================  =================  =============================
UNet          :func:`MSAUNetBaseline`   ``unet``           U-Net / U-Net / U-Net
UNet + MSRB   :func:`MSAUNetWithMSRB`   ``unet_msrb``      MSRB / MSRB / U-Net
UNet + AASPP  :func:`MSAUNetWithAASPP`  ``unet_aaspp``     U-Net / U-Net + AASPP / U-Net
UNet + RASM   :func:`MSAUNetWithRASM`   ``unet_rasm``      U-Net / U-Net / RASM
MSA-UNet      :func:`MSAUNet`           ``msa_unet``       MSRB / MSRB + AASPP / RASM
============  ========================  =================  =============================

Parameters at the published configuration (``model.count_params()``, pinned in
``tests/test_msa_unet.py`` and equal to the per-module formulas written there): UNet
31,054,145; UNet + MSRB 40,841,217; UNet + AASPP 257,678,657; UNet + RASM 70,120,065;
MSA-UNet 306,531,649. The AASPP at the 1024-wide bottom holds 226,624,512 of them (its four
MSAMs, ``46·C²`` each at C = 1024, 193 M).

All five go through one function, ``_build``, with the flags ``msrb``, ``aaspp`` and ``rasm``.

Smallest input: the MSAM pools its input by 8, so every map an MSAM sees must have sides
divisible by 8. In AASPP that map is the bottom (1/2^depth), so a model with AASPP needs sides
divisible by 2^(depth+3) — 128 for the published depth 4 (smallest input 128×128). With RASM
but no AASPP the deepest MSAM runs in ``dec{depth}`` at 1/2^(depth−1): 2^(depth+2) = 64.
Without either, 2^depth = 16. Other sizes raise :class:`keras_liver.errors.ModelInputError`.

Readings (ASSUMPTION unless the paper or SPEC §3 says it)
---------------------------------------------------------
- Every convolution keeps its bias (Keras default), has He-normal kernels (§ Implementation
  details, ref. [31]) and is followed by BN and ReLU — the paper says so for the MSRB; we use
  the same unit in AASPP, MSAM (inner convs) and RASM (its two Conv 1×1 projections).
  Exceptions: the MSAM's last Conv 1×1 is linear before the sigmoid (SPEC §3), the U-Net
  up-convolution is linear, and the head is Conv 1×1 + sigmoid.
- MSRB: the residual sum f1(Fin) ⊕ f1[…] has no activation of its own; DropBlock (block 7,
  rate 0.1: ASSUMPTION, SPEC §3; constant rate, masks per sample and channel) comes last.
- AASPP: the branch width and the output width equal the input width C (Eq. 3,
  Fout ∈ R^{H×W×C}); the Conv 1×1 after the concat is followed by BN-ReLU (ASSUMPTION).
- MSAM: pooling is MaxPool with stride = pool size; "bilinear ×2" is
  ``UpSampling2D(interpolation="bilinear")`` (``LinearUpSampling`` in 3-D).
- RASM: F_high is the map from below (AASPP output, or the previous decoder level); concat
  order [b2(F_high); F_low] as in Eq. 4; both MSRBs and both projections at the level's width
  (``C''`` = width of F_low).
- Baseline U-Net (Table 2 "UNet", Ronneberger et al. [13], no details in the paper):
  two Conv 3×3-BN-ReLU per level and at the bottom; decoder Conv2DTranspose 2×2 stride 2 to
  the skip's width → concat [skip, up] → two Conv 3×3-BN-ReLU — the layout of
  :func:`keras_liver.models.ra_vnet.UNet` (same parameter count), with He-normal kernels.
- Ablations: "U-Net + MSRB" replaces the encoder's and the bottom's two convs by MSRBs
  (Fig. 1 caption: "In the encoder, we replaced the sequence of the two convolutional layers
  … with the proposed MRSB"); "U-Net + AASPP" inserts AASPP after the U-Net bottom; "U-Net +
  RASM" replaces the skip connections and the U-Net decoder levels by RASMs. None of this is
  spelled out in the paper.
"""
from __future__ import annotations

import keras
from keras import layers

from keras_liver import ndim
from keras_liver.blocks import (apply_conv_bn_relu, apply_head, apply_unet_decoder_level,
                                apply_unet_encoder_level, head_activation)
from keras_liver.errors import ModelInputError
from keras_liver.layers import DropBlock

KERNEL_INITIALIZER = "he_normal"
#: Dilation rates of the four AASPP branches (Eq. 3); rate 1 is the Conv 1×1 branch.
AASPP_RATES = (1, 2, 4, 8)
#: Pool factors of the MSAM (Eq. 2): Fp2, Fp4, Fp8.
MSAM_POOLS = (2, 4, 8)


def _conv_unit(x, filters, kernel_size, *, name, **kwargs):
    """Conv (He-normal, bias) → BN → ReLU, the unit of every MSA-UNet module."""
    return apply_conv_bn_relu(x, filters, kernel_size, kernel_initializer=KERNEL_INITIALIZER,
                              name=name, **kwargs)


# --------------------------------------------------------------------------- paper modules

def apply_msrb(x, filters: int, *, dropblock_size: int = 7, dropblock_rate: float = 0.1,
               name: str):
    """Multi-scale residual block (Eq. 1, Fig. 2), output width ``filters`` (C').

    ``Fout = d( f1(Fin) ⊕ f1[ f3(Fin) ; f3(f3(Fin)) ] )`` with every f a Conv (C')-BN-ReLU
    and d a :class:`~keras_liver.layers.DropBlock`.

    Layers: ``{name}_b1_*`` (f3), ``{name}_b2_1_*``, ``{name}_b2_2_*`` (f3∘f3),
    ``{name}_concat``, ``{name}_fuse_*`` (f1 of the concat), ``{name}_shortcut_*`` (f1 of the
    input), ``{name}_add``, ``{name}_dropblock``.

    Parameters (C = input width, biases kept, BN 4 per channel):
    ``19·C·C' + 11·C'² + 25·C'``.
    """
    b1 = _conv_unit(x, filters, 3, name=f"{name}_b1")
    b2 = _conv_unit(x, filters, 3, name=f"{name}_b2_1")
    b2 = _conv_unit(b2, filters, 3, name=f"{name}_b2_2")
    y = layers.Concatenate(axis=-1, name=f"{name}_concat")([b1, b2])
    y = _conv_unit(y, filters, 1, name=f"{name}_fuse")
    shortcut = _conv_unit(x, filters, 1, name=f"{name}_shortcut")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return DropBlock(rate=dropblock_rate, block_size=dropblock_size,
                     name=f"{name}_dropblock")(y)


def apply_msam(x, *, name: str):
    """Multi-scale attention module (Eq. 2, Fig. 3); output = input shape (H, W, C).

    Fp2, Fp4, Fp8 = MaxPool 2, 4, 8 of Fin; Fp4' = f3(Fp4 + b2(f3(Fp8)));
    Fp2' = f3(Fp2 + b2(f3(Fp4'))); Fout = Fin ⊗ σ(f1(b2(f3(Fp2')))). The f3 are
    Conv 3×3 (C)-BN-ReLU, f1 is a linear Conv 1×1 (C), b2 bilinear ×2. The attention map
    σ(…) has the input's shape (per position and channel) and is the output of the layer
    ``{name}_mask_sigmoid``. Every spatial side must be divisible by 8.

    Parameters: five Conv 3×3-BN (``9·C² + 5·C`` each) and one Conv 1×1 (``C² + C``):
    ``46·C² + 26·C``.
    """
    rank = ndim.rank_of(x)
    channels = x.shape[-1]
    sides = tuple(x.shape[1:-1])
    if any(s is None or s % 8 for s in sides):
        raise ModelInputError(f"{name}: MSAM max-pools by 8, so it needs spatial sizes "
                              f"divisible by 8; received a map of shape {tuple(x.shape)}")
    pooled = {k: ndim.max_pool(rank, k, name=f"{name}_pool{k}")(x) for k in MSAM_POOLS}

    def up(t, label):
        return ndim.upsampling(rank, 2, interpolation="bilinear", name=f"{name}_{label}_up")(t)

    y = _conv_unit(pooled[8], channels, 3, name=f"{name}_p8_conv")                 # f3(Fp8)
    y = layers.Add(name=f"{name}_p4_add")([pooled[4], up(y, "p8")])
    y = _conv_unit(y, channels, 3, name=f"{name}_p4_fuse")                        # Fp4'
    y = _conv_unit(y, channels, 3, name=f"{name}_p4_conv")                        # f3(Fp4')
    y = layers.Add(name=f"{name}_p2_add")([pooled[2], up(y, "p4")])
    y = _conv_unit(y, channels, 3, name=f"{name}_p2_fuse")                        # Fp2'
    y = _conv_unit(y, channels, 3, name=f"{name}_p2_conv")                        # f3(Fp2')
    y = up(y, "p2")
    y = ndim.conv(rank, channels, 1, kernel_initializer=KERNEL_INITIALIZER,
                  name=f"{name}_mask_conv")(y)                                    # f1, linear
    mask = layers.Activation("sigmoid", name=f"{name}_mask_sigmoid")(y)
    return layers.Multiply(name=f"{name}_mul")([x, mask])


def apply_aaspp(x, filters: int | None = None, *, name: str):
    """Attention atrous spatial pyramid pooling (Eq. 3, Fig. 4).

    ``Fout = f1[ α(f1(Fin)) ; α(f3_r2(Fin)) ; α(f3_r4(Fin)) ; α(f3_r8(Fin)) ]`` with α the
    MSAM; every branch and the final Conv 1×1 have ``filters`` channels (default: the input
    width C, as the paper's Fout ∈ R^{H×W×C}) and BN-ReLU.

    Layers: ``{name}_rate{r}_*`` (branch conv), ``{name}_rate{r}_msam_*``, ``{name}_concat``,
    ``{name}_fuse_*``. Parameters (input width C, filters C'): ``C·C' + 5C'`` (rate 1)
    + 3·(``9·C·C' + 5C'``) + 4·MSAM(C') + ``4C'·C' + 5C'``; for C = C':
    ``216·C² + 129·C``.
    """
    filters = int(filters or x.shape[-1])
    branches = []
    for rate in AASPP_RATES:
        kernel = 1 if rate == 1 else 3
        y = _conv_unit(x, filters, kernel, dilation_rate=rate, name=f"{name}_rate{rate}")
        branches.append(apply_msam(y, name=f"{name}_rate{rate}_msam"))
    y = layers.Concatenate(axis=-1, name=f"{name}_concat")(branches)
    return _conv_unit(y, filters, 1, name=f"{name}_fuse")


def apply_rasm(high, low, filters: int | None = None, *, dropblock_size: int = 7,
               dropblock_rate: float = 0.1, name: str):
    """Residual attention skip module (Eq. 4, Fig. 5): one decoder level.

    ``high`` F_high (h, w, C') from below, ``low`` F_low (2h, 2w, C) the encoder skip::

        up   = b2(F_high)                                     # bilinear ×2
        Fout = f1(F_low) ⊕ f1(up) ⊕ α(θ2[up ; F_low])         # θ2 = two MSRBs, α = MSAM

    All at ``filters`` channels (default: F_low's width, C''). The f1 are Conv 1×1-BN-ReLU.

    Layers: ``{name}_up``, ``{name}_concat``, ``{name}_msrb1_*``, ``{name}_msrb2_*``,
    ``{name}_msam_*``, ``{name}_low_*``, ``{name}_high_*``, ``{name}_add``. Parameters:
    MSRB(C' + C, C'') + MSRB(C'', C'') + MSAM(C'') + ``C·C'' + 5C''`` + ``C'·C'' + 5C''``.
    """
    rank = ndim.rank_of(high)
    filters = int(filters or low.shape[-1])
    drop = dict(dropblock_size=dropblock_size, dropblock_rate=dropblock_rate)
    up = ndim.upsampling(rank, 2, interpolation="bilinear", name=f"{name}_up")(high)
    y = layers.Concatenate(axis=-1, name=f"{name}_concat")([up, low])
    y = apply_msrb(y, filters, name=f"{name}_msrb1", **drop)
    y = apply_msrb(y, filters, name=f"{name}_msrb2", **drop)
    y = apply_msam(y, name=f"{name}_msam")
    low_path = _conv_unit(low, filters, 1, name=f"{name}_low")
    high_path = _conv_unit(up, filters, 1, name=f"{name}_high")
    return layers.Add(name=f"{name}_add")([low_path, high_path, y])


# --------------------------------------------------------------------------- U-Net levels

def _plain_encoder_level(x, filters, *, name):
    return apply_unet_encoder_level(x, filters, kernel_initializer=KERNEL_INITIALIZER, name=name)


def _plain_decoder_level(x, skip, *, name):
    return apply_unet_decoder_level(x, skip, kernel_initializer=KERNEL_INITIALIZER, name=name)


# --------------------------------------------------------------------------- assembly

def min_divisor(depth: int, *, aaspp: bool, rasm: bool) -> tuple[int, str]:
    """The number every spatial side must be a multiple of, and why (see module docstring)."""
    if aaspp:
        return 2 ** (depth + 3), (
            f"{depth} poolings bring the input to 1/{2 ** depth}, where the MSAM inside AASPP "
            f"max-pools by 8")
    if rasm:
        return 2 ** (depth + 2), (
            f"the MSAM of the deepest RASM (dec{depth}, 1/{2 ** (depth - 1)} of the input) "
            f"max-pools by 8")
    return 2 ** depth, f"{depth} poolings"


def _build(builder, *, input_shape, base_filters, depth, num_classes, msrb, aaspp, rasm,
           dropblock_size=7, dropblock_rate=0.1, name):
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"{builder} needs depth >= 1 poolings; received depth={depth!r}")
    if not isinstance(base_filters, int) or isinstance(base_filters, bool) or base_filters < 1:
        raise ValueError(f"{builder} needs base_filters >= 1; "
                         f"received base_filters={base_filters!r}")
    head_activation(num_classes)  # validates num_classes
    if msrb or rasm:
        DropBlock(rate=dropblock_rate, block_size=dropblock_size)  # validates both
    divisor, why = min_divisor(depth, aaspp=aaspp, rasm=rasm)
    try:
        shape = ndim.check_input_shape(builder, input_shape, rank=2, divisor=divisor)
    except ModelInputError as err:
        if "divisible" not in str(err):
            raise
        raise ModelInputError(f"{err} ({why}; the smallest input is {divisor}×{divisor})"
                              ) from None
    rank = len(shape) - 1
    widths = [base_filters * 2 ** level for level in range(depth + 1)]
    drop = dict(dropblock_size=dropblock_size, dropblock_rate=dropblock_rate)

    def encode(t, filters, stage):
        if msrb:
            return apply_msrb(t, filters, name=f"{stage}_msrb", **drop)
        return _plain_encoder_level(t, filters, name=stage)

    inputs = keras.Input(shape=shape, name="input")
    x, skips = inputs, []
    for level in range(1, depth + 1):
        skip = encode(x, widths[level - 1], f"enc{level}")
        skips.append(skip)
        x = ndim.max_pool(rank, 2, name=f"enc{level}_pool")(skip)
    x = encode(x, widths[depth], "bottom")
    if aaspp:
        x = apply_aaspp(x, widths[depth], name="bottom_aaspp")
    for level in range(depth, 0, -1):
        skip = skips[level - 1]
        if rasm:
            x = apply_rasm(x, skip, widths[level - 1], name=f"dec{level}_rasm", **drop)
        else:
            x = _plain_decoder_level(x, skip, name=f"dec{level}")
    outputs = apply_head(x, num_classes, name="head", kernel_initializer=KERNEL_INITIALIZER)
    return keras.Model(inputs, outputs, name=name)


def MSAUNet(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
            num_classes: int = 1, dropblock_size: int = 7, dropblock_rate: float = 0.1,
            name: str = "msa_unet"):
    """MSA-UNet (Fig. 1; Table 2 "MSA-UNet"): MSRB encoder and bottom, AASPP at the bottom,
    RASM at every decoder level, Conv 1×1 + sigmoid head.

    Args:
        input_shape: ``(H, W, C)``; H and W divisible by ``2**(depth+3)`` (128 for depth 4:
            MSAM pools the bottom map by 8 inside AASPP). Paper: 512×512×1.
        base_filters: width F of the first level; levels F, 2F, …, bottom ``2**depth·F``
            (paper: 64 → 64, 128, 256, 512, 1024).
        depth: number of poolings (paper: 4).
        num_classes: 1 → sigmoid (paper); K > 1 → K-channel softmax.
        dropblock_size, dropblock_rate: DropBlock at the end of every MSRB (ASSUMPTION: 7 and
            0.1; the paper gives no values).

    ASSUMPTION: see the module docstring. Raises ``keras_liver.errors.ModelInputError`` for
    an input shape it cannot take.
    """
    return _build("MSAUNet", input_shape=input_shape, base_filters=base_filters, depth=depth,
                  num_classes=num_classes, msrb=True, aaspp=True, rasm=True,
                  dropblock_size=dropblock_size, dropblock_rate=dropblock_rate, name=name)


def MSAUNetBaseline(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
                    num_classes: int = 1, name: str = "msa_unet_baseline"):
    """Table 2 "UNet": the paper's U-Net baseline [13] in MSA-UNet's layout.

    ASSUMPTION: two Conv 3×3-BN-ReLU per level and at the bottom, MaxPool 2, decoder
    up-conv 2×2 stride 2 → concat [skip, up] → two Conv 3×3-BN-ReLU, He-normal kernels.
    Spatial sizes divisible by ``2**depth``.
    """
    return _build("MSAUNetBaseline", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, msrb=False, aaspp=False, rasm=False,
                  name=name)


def MSAUNetWithMSRB(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
                    num_classes: int = 1, dropblock_size: int = 7, dropblock_rate: float = 0.1,
                    name: str = "msa_unet_with_msrb"):
    """Table 2 "UNet + MSRB": MSRB replaces the two convs of every encoder level and of the
    bottom; U-Net decoder (ASSUMPTION). Spatial sizes divisible by ``2**depth``."""
    return _build("MSAUNetWithMSRB", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, msrb=True, aaspp=False, rasm=False,
                  dropblock_size=dropblock_size, dropblock_rate=dropblock_rate, name=name)


def MSAUNetWithAASPP(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
                     num_classes: int = 1, name: str = "msa_unet_with_aaspp"):
    """Table 2 "UNet + AASPP": U-Net with AASPP after the bottom's two convs (ASSUMPTION).
    Spatial sizes divisible by ``2**(depth+3)`` (128 for depth 4)."""
    return _build("MSAUNetWithAASPP", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, msrb=False, aaspp=True, rasm=False,
                  name=name)


def MSAUNetWithRASM(input_shape=(512, 512, 1), base_filters: int = 64, depth: int = 4,
                    num_classes: int = 1, dropblock_size: int = 7, dropblock_rate: float = 0.1,
                    name: str = "msa_unet_with_rasm"):
    """Table 2 "UNet + RASM": U-Net encoder and bottom, RASM at every decoder level in place
    of the skip connection and the U-Net decoder level (ASSUMPTION). The RASM's MSRBs carry
    DropBlock. Spatial sizes divisible by ``2**(depth+2)`` (64 for depth 4)."""
    return _build("MSAUNetWithRASM", input_shape=input_shape, base_filters=base_filters,
                  depth=depth, num_classes=num_classes, msrb=False, aaspp=False, rasm=True,
                  dropblock_size=dropblock_size, dropblock_rate=dropblock_rate, name=name)


#: Table 2 rows (snake_case of the paper's row labels) → builders.
ABLATIONS = {
    "unet": MSAUNetBaseline,
    "unet_msrb": MSAUNetWithMSRB,
    "unet_aaspp": MSAUNetWithAASPP,
    "unet_rasm": MSAUNetWithRASM,
    "msa_unet": MSAUNet,
}
#: The paper's Table 2 row labels, verbatim → ``ABLATIONS`` keys.
TABLE2_ROWS = {
    "UNet": "unet",
    "UNet + MSRB": "unet_msrb",
    "UNet + AASPP": "unet_aaspp",
    "UNet + RASM": "unet_rasm",
    "MSA-UNet": "msa_unet",
}

__all__ = ["ABLATIONS", "TABLE2_ROWS", "MSAUNet", "MSAUNetBaseline", "MSAUNetWithAASPP",
           "MSAUNetWithMSRB", "MSAUNetWithRASM", "apply_aaspp", "apply_msam", "apply_msrb",
           "apply_rasm"]
