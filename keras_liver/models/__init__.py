"""Model builders, one CamelCase function per published network (keras.applications style),
and a registry so configs can name a model: ``get_model("ra_vnet", input_shape=(128, 128, 1),
base_filters=16)``.
"""
from __future__ import annotations

from typing import Callable

import keras

from keras_liver.models.arunet import AttentionResUNet
from keras_liver.models.bada import VARIANTS as _BADA_VARIANTS
from keras_liver.models.bada import BADA
from keras_liver.models.msa_unet import (MSAUNet, MSAUNetBaseline, MSAUNetWithAASPP,
                                         MSAUNetWithMSRB, MSAUNetWithRASM)
from keras_liver.models.ra_unet import RAUNet2D, RAUNet3D, RAUNetBrain
from keras_liver.models.ra_vnet import CofResUNet, RAVNet, RAVNetWithoutCofRes, ResUNet, UNet

#: Registry name → builder. Names are snake_case; each builder's defaults are the published
#: configuration.
MODELS: dict[str, Callable[..., keras.Model]] = {
    "ra_vnet": RAVNet,
    "ra_vnet_without_cofres": RAVNetWithoutCofRes,
    "cofres_unet": CofResUNet,
    "res_unet": ResUNet,
    "unet": UNet,
    "ra_unet_2d": RAUNet2D,
    "ra_unet_3d": RAUNet3D,
    "ra_unet_brain": RAUNetBrain,
    "msa_unet": MSAUNet,
    "msa_unet_baseline": MSAUNetBaseline,
    "msa_unet_with_msrb": MSAUNetWithMSRB,
    "msa_unet_with_aaspp": MSAUNetWithAASPP,
    "msa_unet_with_rasm": MSAUNetWithRASM,
    "attention_res_unet": AttentionResUNet,
    **_BADA_VARIANTS,   # bada, bada_spatial_only, ..., bada_attention_resunet (Tables 1-4)
}


def get_model(name: str, **kwargs) -> keras.Model:
    """Build the registered model ``name`` with the builder's keyword arguments.

    ``input_shape`` may be a list (as read from JSON). Unknown names raise ``KeyError``
    listing the registered ones.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    if "input_shape" in kwargs and kwargs["input_shape"] is not None:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    return MODELS[key](**kwargs)


__all__ = ["MODELS", "get_model", "RAVNet", "RAVNetWithoutCofRes", "CofResUNet", "ResUNet",
           "UNet", "RAUNet2D", "RAUNet3D", "RAUNetBrain", "MSAUNet", "MSAUNetBaseline",
           "MSAUNetWithMSRB", "MSAUNetWithAASPP", "MSAUNetWithRASM", "AttentionResUNet", "BADA"]
