"""The transfer-learning project: what a network learnt on digits 0-4 helps it learn 5-9 from
two labelled examples per class.

Offline, the course makes its own pretrained model: `SPEC` pretrains the image project's CNN
on the digits 0-4 of the MNIST subset (its own five-way head). `FINETUNE` then keeps that
network's convolutional body frozen and trains only a fresh head (the same initial head
weights as `SPEC`) on the digits 5-9, from `labels_per_class` = 2 examples of each. The
baseline is the same network trained from `SPEC`'s initial weights on the same ten examples
with every layer trainable (`FINETUNE` with `trainable=()`): the same data, steps, optimiser and
starting head, so the pretrained body is the only difference.

Ten examples make a noisy score, so the comparison is averaged over `DRAWS` disjoint sets of
labels (`label_draw` 0, 1, ...): the fine-tuned model's mean test accuracy must beat the
scratch model's by at least `MIN_GAIN`.
"""

import dataclasses

from gradschool.projects.spec import Conv2D, Dense, Flatten, MaxPool, Optimizer, Spec

SPEC = Spec(
    name="transfer",
    title="Transfer learning: pretrain on the digits 0-4",
    dataset="mnist",
    input_shape=(28, 28, 1),
    classes=(0, 1, 2, 3, 4),
    layers=(Conv2D(12), MaxPool(2), Conv2D(24), MaxPool(2), Flatten(), Dense(5)),
    optimizer=Optimizer("adam", learning_rate=3e-3),
    batch_size=64,
    epochs=8,
    metric="accuracy",
    target=0.95,  # on the test split's digits 0-4
    seed=0,
    weights_sha256="4a791294bd35eda37267f9cd067de9a94543439e610e13ba941bd211e236068e",
    implementations=("torch", "keras", "jax"),
    notes={
        "preprocessing": "pixels in [0, 1] as gradschool.data gives them; channels last (28, 28, 1), "
                         "or NCHW where the framework's convolutions want it; labels renumbered "
                         "by their place in `classes`",
        "training": "Adam at a constant learning rate, batches shuffled every epoch, no augmentation",
        "loss": "softmax cross-entropy from the logits, averaged over the batch",
    },
)

FINETUNE = dataclasses.replace(
    SPEC,
    title="Transfer learning: fine-tune a fresh head on the digits 5-9, two labels each",
    classes=(5, 6, 7, 8, 9),
    labels_per_class=2,
    trainable=("dense_0",),  # the body (conv_0, conv_1) stays as pretraining left it
    epochs=100,  # batch_size >= the 10 examples: one full batch, one step per epoch
    target=0.65,  # mean test accuracy over the draws, fine-tuned
    notes={**SPEC.notes,
           "head": "dense_0 starts from SPEC.initial_weights() in both runs, fine-tuned and scratch",
           "scratch": "dataclasses.replace(FINETUNE, trainable=()) from SPEC.initial_weights()"},
)

DRAWS = 5  # disjoint sets of labels (label_draw 0..4), each run fine-tuned and from scratch
MIN_GAIN = 0.04  # mean test accuracy, fine-tuned minus from scratch, over the draws


def draws(spec: Spec = FINETUNE) -> list[Spec]:
    """`spec` once per set of labels: label_draw = 0, 1, ..., DRAWS - 1."""
    return [dataclasses.replace(spec, label_draw=draw) for draw in range(DRAWS)]
