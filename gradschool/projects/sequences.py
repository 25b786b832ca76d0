"""The sequence project: a character model of first names (US Census names, a-z).

At every position the model predicts the next character from the ones before it; the score is
the validation loss in nats per character, which must beat a bigram model's.
"""

from gradschool.projects.spec import LSTM, Dense, Embedding, Optimizer, Spec

SPEC = Spec(
    name="sequences",
    title="A character model of first names",
    dataset="names",
    input_shape=(12,),  # the longest name has 11 letters, plus the boundary token
    alphabet=".abcdefghijklmnopqrstuvwxyz",
    layers=(Embedding(27, 16), LSTM(64), Dense(27)),
    optimizer=Optimizer("adam", learning_rate=1e-2),
    batch_size=64,
    epochs=8,
    metric="loss",
    target=2.3778,  # the bigram baseline on validation (notes), rounded down at the 4th decimal
    target_split="val",
    higher_is_better=False,
    seed=0,
    weights_sha256="6b5e700de992ec094201ec77abd3d3f3f643af1d0fbae60644f07e7afb67ea9f",
    notes={
        "preprocessing": "Spec.prepare: x = boundary + letters, y = letters + boundary, padded "
                         "(x with the boundary token, y with -1)",
        "loss": "softmax cross-entropy from the logits at every position whose target is not -1, "
                "averaged over those positions (nats per character)",
        "baseline": "bigram counts on the training names with add-one smoothing, boundary token "
                    "at both ends: 2.37785 nats per character on validation",
        "sampling": "start from the boundary token, draw each next letter from the softmax of the "
                    "logits divided by a temperature, stop at the boundary token",
    },
)
