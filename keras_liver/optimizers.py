"""Optimizers the papers' recipes need and Keras does not have.

:class:`CoupledWeightDecayAdam` — Adam with an L2 penalty added to the gradient, as PyTorch's
``torch.optim.Adam(weight_decay=wd)`` does (issue "Adam 1e-3 with L2 weight decay 4e-5 applied
as PyTorch's coupled Adam does"; SPEC §4: BADA's "Adam 1e-3 with L2 4e-5 (coupled, as
PyTorch's Adam)", paper §4.3 "We employ Adam optimizer and weight decay is set to 0.00004",
implemented in PyTorch).

PyTorch's Adam with ``weight_decay = λ`` (``torch/optim/adam.py``, ``decoupled_weight_decay``
False), at step t for a parameter θ with gradient g::

    g  ← g + λ θ                       (coupled L2: it enters both moments)
    m  ← β1 m + (1 − β1) g
    v  ← β2 v + (1 − β2) g²
    θ  ← θ − lr · (m / (1 − β1^t)) / (√(v / (1 − β2^t)) + ε)

Keras' own ``weight_decay`` argument is the decoupled (AdamW, Loshchilov & Hutter) form
``θ ← θ − lr λ θ`` applied beside the Adam step, which is a different optimizer: with Adam the
coupled penalty is rescaled by 1/√v like the rest of the gradient, the decoupled one is not.

Epsilon: Keras' Adam adds ε to √v before the bias correction of v ("epsilon hat", Kingma & Ba
just before §2.1), PyTorch after it, so with the same ε the two denominators differ by
ε · (1/√(1 − β2^t) − 1) in PyTorch's units — immaterial when |g| ≫ ε. Keras' default ε is
1e-7, PyTorch's 1e-8; :func:`keras_liver.training.build_optimizer` passes whatever the recipe
gives.
"""
from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["CoupledWeightDecayAdam"]


@keras.saving.register_keras_serializable(package="keras_liver")
class CoupledWeightDecayAdam(keras.optimizers.Adam):
    """Adam with coupled L2 weight decay: ``g ← g + l2 · θ`` before the moment updates, as
    PyTorch's ``torch.optim.Adam(weight_decay=l2)`` (module docstring for the formula).

    Args:
        learning_rate: as :class:`keras.optimizers.Adam` (a float, a schedule or a callable).
        l2: the L2 coefficient λ (PyTorch's ``weight_decay``). Default 4e-5 = BADA §4.3.
            Applied to every trainable variable the optimizer updates — kernels, biases and
            BatchNorm γ/β alike, PyTorch's default of one parameter group. To leave some out
            (PyTorch's parameter groups), call
            :meth:`~keras.optimizers.Optimizer.exclude_from_weight_decay` before the optimizer
            is built; its ``var_list`` / ``var_names`` apply to this penalty.
        beta_1, beta_2, epsilon, amsgrad: as :class:`keras.optimizers.Adam` (ε is Keras'
            "epsilon hat"; see the module docstring).
        weight_decay: must be ``None`` (or 0): Keras' decoupled decay on top of the coupled
            penalty is refused with ``ValueError`` — use one or the other.
        **kwargs: the other arguments of :class:`keras.optimizers.Optimizer` (``clipnorm``,
            ``global_clipnorm``, ``gradient_accumulation_steps``, ``loss_scale_factor``, …).

    Where the penalty is added: :meth:`update_step`, which Keras calls once per variable with
    the final gradient — after the loss-scale unscaling, after clipping (PyTorch's
    ``clip_grad_norm_`` also runs on the raw gradients, before ``step()`` adds λθ), after
    gradient accumulation is averaged and, under ``tf.distribute``, inside
    ``distribution.extended.update`` after the cross-replica all-reduce, once on each copy of
    the mirrored variable. Adding λθ before the all-reduce would sum it over the replicas (N·λθ).
    The same method runs inside ``jit_compile``'d train steps and under
    :class:`keras.optimizers.LossScaleOptimizer` (mixed precision), which calls this
    optimizer's ``apply`` with unscaled gradients.
    """

    def __init__(self, learning_rate=0.001, l2=4e-5, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, weight_decay=None, name=None, **kwargs):
        if weight_decay:  # 0 / None: nothing decoupled to apply
            raise ValueError(
                f"CoupledWeightDecayAdam applies a coupled L2 penalty (l2={l2!r}, PyTorch's Adam "
                f"weight_decay); it cannot be combined with Keras' decoupled weight_decay="
                f"{weight_decay!r} (AdamW-style). Pass one of them: l2 for PyTorch's "
                "torch.optim.Adam(weight_decay=...), keras.optimizers.Adam(weight_decay=...) or "
                "AdamW for the decoupled form.")
        try:
            l2 = float(l2)
        except (TypeError, ValueError):
            raise ValueError(f"l2 must be a number >= 0; received l2={l2!r}") from None
        if not math.isfinite(l2) or l2 < 0:
            raise ValueError(f"l2 must be a finite number >= 0; received l2={l2!r}")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, amsgrad=amsgrad, weight_decay=None, name=name,
                         **kwargs)
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        """Adam's step on ``gradient + l2 · variable`` (the variable's value before the step)."""
        if self.l2 and self._use_weight_decay(variable):
            gradient = ops.add(ops.cast(_dense(gradient), variable.dtype),
                               ops.multiply(ops.cast(self.l2, variable.dtype), variable))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config


def _dense(gradient):
    """A sparse (``tf.IndexedSlices``) gradient as a dense tensor: the penalty touches every
    entry of the variable, as PyTorch's dense update does."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return gradient
