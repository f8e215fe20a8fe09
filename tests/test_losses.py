"""Segmentation losses against hand-worked values on tiny tensors."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_liver.losses import (
    BCEDiceLoss,
    DiceCELoss,
    GeneralizedDiceLoss,
    SoftDiceLoss,
    get_loss,
    loss_names,
)

# One 2×2 binary sample: target [[1, 0], [1, 1]], prediction [[0.8, 0.2], [0.6, 0.4]].
# Σ y·p = 0.8 + 0.6 + 0.4 = 1.8, Σ y = 3, Σ p = 2.0.
Y_A = np.array([[1, 0], [1, 1]], np.float32).reshape(1, 2, 2, 1)
P_A = np.array([[0.8, 0.2], [0.6, 0.4]], np.float32).reshape(1, 2, 2, 1)
# A second sample with an empty target and p = 0.5 everywhere: Σ y·p = 0, Σ y + Σ p = 2.
Y_B = np.zeros((1, 2, 2, 1), np.float32)
P_B = np.full((1, 2, 2, 1), 0.5, np.float32)
BCE_A = -(math.log(0.8) + math.log(0.8) + math.log(0.6) + math.log(0.4)) / 4


def value(loss, y_true, y_pred):
    return float(keras.ops.convert_to_numpy(loss(y_true, y_pred)))


def test_soft_dice_by_hand():
    loss = SoftDiceLoss()                          # smooth 1, over the batch
    assert value(loss, Y_A, P_A) == pytest.approx(1 - (2 * 1.8 + 1) / (3 + 2.0 + 1), abs=1e-6)
    assert value(loss, Y_A, Y_A) == pytest.approx(0.0, abs=1e-7)       # perfect → 0
    assert value(SoftDiceLoss(smooth=0.0), Y_A, P_A) == pytest.approx(1 - 3.6 / 5, abs=1e-6)


def test_batch_and_sample_reduction_differ():
    y, p = np.concatenate([Y_A, Y_B]), np.concatenate([P_A, P_B])
    batch = value(SoftDiceLoss(dice_over="batch"), y, p)
    sample = value(SoftDiceLoss(dice_over="sample"), y, p)
    assert batch == pytest.approx(1 - (2 * 1.8 + 1) / (3 + 2.0 + 2.0 + 1), abs=1e-6)   # 0.425
    loss_a, loss_b = 1 - 4.6 / 6, 1 - 1 / 3
    assert sample == pytest.approx((loss_a + loss_b) / 2, abs=1e-6)                # 0.45
    per_sample = SoftDiceLoss(dice_over="sample", reduction=None)(y, p)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(per_sample), [loss_a, loss_b],
                               atol=1e-6)
    with pytest.raises(ValueError, match="dice_over"):
        SoftDiceLoss(dice_over="voxel")


def test_bce_dice_by_hand():
    loss = BCEDiceLoss(bce_weight=0.5, dice_weight=1.0)
    expected = 0.5 * BCE_A + (1 - 4.6 / 6)
    assert value(loss, Y_A, P_A) == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="one-channel"):
        loss(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2, 2), 0.5))


def _two_class():
    labels = np.array([[1, 0], [0, 1]])
    p1 = np.array([[0.9, 0.2], [0.4, 0.6]], np.float32)
    y = np.eye(2, dtype=np.float32)[labels].reshape(1, 2, 2, 2)
    p = np.stack([1 - p1, p1], -1).reshape(1, 2, 2, 2)
    return labels, y, p


def test_dice_ce_by_hand():
    labels, y, p = _two_class()
    # class 1: Σyp = 0.9 + 0.6, Σy = 2, Σp = 2.1; class 0: Σyp = 0.8 + 0.6, Σy = 2, Σp = 1.9
    dice1, dice0 = (2 * 1.5 + 1) / (4.1 + 1), (2 * 1.4 + 1) / (3.9 + 1)
    ce = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.6)) / 4
    assert value(DiceCELoss(), y, p) == pytest.approx(1 - (dice0 + dice1) / 2 + ce, abs=1e-5)
    assert value(DiceCELoss(include_background=False, lambda_ce=0.5), y, p) == \
        pytest.approx(1 - dice1 + 0.5 * ce, abs=1e-5)
    # integer targets (B, H, W, 1) are one-hot encoded
    sparse = labels.reshape(1, 2, 2, 1).astype(np.int32)
    assert value(DiceCELoss(), sparse, p) == pytest.approx(value(DiceCELoss(), y, p), abs=1e-6)
    assert value(SoftDiceLoss(), y, p) == pytest.approx(1 - (dice0 + dice1) / 2, abs=1e-6)


def test_generalized_dice_by_hand():
    # Binary sample A as two classes. fg: Σr = 3 (w = 1/9), Σrp = 1.8, Σ(r+p) = 5;
    # bg: r = [0,1,0,0], p = [0.2,0.8,0.4,0.6]: Σr = 1 (w = 1), Σrp = 0.8, Σ(r+p) = 3.
    expected = 1 - 2 * (1.8 / 9 + 0.8) / (5 / 9 + 3)                     # 0.4375
    assert value(GeneralizedDiceLoss(), Y_A, P_A) == pytest.approx(expected, abs=1e-5)
    # A class absent from the target takes the largest weight of the present ones.
    y = np.eye(3, dtype=np.float32)[[0, 1]].reshape(1, 1, 2, 3)
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]], np.float32).reshape(1, 1, 2, 3)
    assert value(GeneralizedDiceLoss(), y, p) == pytest.approx(1 - 2 * 1.3 / 4.0, abs=1e-5)
    # dice_over="sample" (default) averages per sample; "batch" pools
    yy, pp = np.concatenate([Y_A, Y_B]), np.concatenate([P_A, P_B])
    # sample B: fg absent → weight of bg (Σr=4, w=1/16): Σrp = 2, Σ(r+p) = 6 for bg, 2 for fg.
    loss_b = 1 - 2 * (2 / 16) / (6 / 16 + 2 / 16)
    assert value(GeneralizedDiceLoss(), yy, pp) == pytest.approx((expected + loss_b) / 2,
                                                                 abs=1e-5)
    pooled = value(GeneralizedDiceLoss(dice_over="batch"), yy, pp)
    # fg: Σr = 3 (1/9), Σrp = 1.8, Σ(r+p) = 7; bg: Σr = 5 (1/25), Σrp = 2.8, Σ(r+p) = 9
    assert pooled == pytest.approx(1 - 2 * (1.8 / 9 + 2.8 / 25) / (7 / 9 + 9 / 25), abs=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_input_gives_float32_loss(dtype):
    _, y, p = _two_class()
    for loss in (SoftDiceLoss(), DiceCELoss(), GeneralizedDiceLoss()):
        low = loss(y, tf.cast(p, dtype))
        assert low.dtype == tf.float32
        assert float(low) == pytest.approx(value(loss, y, p), abs=2e-2 if dtype == "bfloat16"
                                           else 2e-3)
    out = BCEDiceLoss()(Y_A, tf.cast(P_A, dtype))
    assert out.dtype == tf.float32


def test_three_dimensional_and_rank_checks():
    rng = np.random.default_rng(0)
    y = (rng.random((2, 4, 4, 3, 1)) > 0.5).astype(np.float32)
    assert value(SoftDiceLoss(), y, y) == pytest.approx(0.0, abs=1e-7)
    # rank-5 sums equal the rank-4 sums of the same voxels laid out flat
    p = rng.random((2, 4, 4, 3, 1)).astype(np.float32)
    flat = value(SoftDiceLoss(dice_over="sample"), y.reshape(2, 4, 12, 1), p.reshape(2, 4, 12, 1))
    assert value(SoftDiceLoss(dice_over="sample"), y, p) == pytest.approx(flat, abs=1e-6)
    with pytest.raises(ValueError, match="rank 4"):
        SoftDiceLoss()(np.zeros((4, 4, 1)), np.zeros((4, 4, 1)))


@pytest.mark.parametrize("name,kwargs", [
    ("dice", {"smooth": 0.5, "dice_over": "sample"}),
    ("bce_dice", {"bce_weight": 0.5, "dice_weight": 1.0}),
    ("dice_ce", {"lambda_dice": 2.0, "include_background": False}),
    ("generalized_dice", {"epsilon": 1e-4}),
])
def test_serialization_round_trip(name, kwargs):
    loss = get_loss(name, **kwargs)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(back) is type(loss) and back.get_config() == loss.get_config()
    for key, val in kwargs.items():
        assert getattr(back, key) == val
    y, p = (Y_A, P_A) if name in ("dice", "bce_dice", "generalized_dice") else _two_class()[1:]
    assert value(back, y, p) == pytest.approx(value(loss, y, p))


def test_get_loss_names():
    assert loss_names() == ["bce", "bce_dice", "ce", "dice", "dice_ce", "generalized_dice"]
    assert isinstance(get_loss("bce"), keras.losses.BinaryCrossentropy)
    assert isinstance(get_loss("Generalised-Dice"), GeneralizedDiceLoss)
    with pytest.raises(ValueError, match="unknown loss 'focal'"):
        get_loss("focal")
    with pytest.raises(ValueError, match="does not take"):
        get_loss("dice", lambda_ce=1.0)


def test_gradients_are_finite_and_training_step_runs():
    _, y, p = _two_class()
    p = np.clip(p, 0, 1)
    p[0, 0, 0] = [1.0, 0.0]                       # saturated probabilities (log 0 in CE)
    p_var = tf.Variable(p)
    for loss in (SoftDiceLoss(), DiceCELoss(), GeneralizedDiceLoss()):
        with tf.GradientTape() as tape:
            out = loss(y, p_var)
        grad = tape.gradient(out, p_var)
        assert np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).sum() > 0
    # in a compiled model with an unknown batch size (graph mode)
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs))
    model.compile(optimizer="sgd", loss=get_loss("bce_dice", bce_weight=0.5))
    x = np.random.default_rng(1).random((3, 4, 4, 1)).astype(np.float32)
    logs = model.train_on_batch(x, (x > 0.5).astype(np.float32), return_dict=True)
    assert np.isfinite(logs["loss"])
