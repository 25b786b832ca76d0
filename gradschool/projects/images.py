"""The image project: a small CNN on the course's MNIST subset (3500 training images).

Each framework feeds it with its own input pipeline (torch.utils.data, tf.data, a NumPy
iterator with a background prefetch for JAX, the engine's DataLoader), with the same
augmentation.
"""

import dataclasses

from gradschool.projects.spec import Conv2D, Dense, Flatten, MaxPool, Optimizer, Spec

SPEC = Spec(
    name="images",
    title="Handwritten digits with a small CNN",
    dataset="mnist",
    input_shape=(28, 28, 1),
    layers=(Conv2D(12), MaxPool(2), Conv2D(24), MaxPool(2), Flatten(), Dense(10)),
    optimizer=Optimizer("adam", learning_rate=3e-3),
    batch_size=64,
    epochs=16,
    metric="accuracy",
    target=0.97,
    seed=0,
    max_shift=2,
    schedule="warmup_cosine",
    warmup_steps=50,
    weights_sha256="cfb9fe5a632d5f995bf5248ce8dd3a8f85e8b0fe4876768a03814632c511945d",
    notes={
        "preprocessing": "pixels in [0, 1] as gradschool.data gives them; channels last (28, 28, 1), "
                         "or NCHW (1, 28, 28) where the framework's convolutions want it",
        "augmentation": "each training batch shifted by one random (dy, dx) in [-max_shift, "
                        "max_shift] pixels, zeros coming in",
        "schedule": "learning rate warmed up linearly over the first warmup_steps steps, then "
                    "cosine decay to 0 at the last step",
        "loss": "softmax cross-entropy from the logits, averaged over the batch",
    },
)

# The student of Part 4's distillation (10_compress): the same network with a third of the
# filters, for every framework. Its initial weights come from make_initial_weights() (seeded; no
# committed file, so no checksum).
STUDENT = dataclasses.replace(
    SPEC, name="images_student", title="The image CNN with a third of the filters",
    layers=(Conv2D(4), MaxPool(2), Conv2D(8), MaxPool(2), Flatten(), Dense(10)), weights_sha256="")
