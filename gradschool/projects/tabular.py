"""The tabular project: which penguin species, from four measurements (Palmer penguins).

The seed of every real project: load, split, normalise, build, train, evaluate, save, load
into a fresh object and get identical predictions.
"""

from gradschool.projects.spec import Dense, Optimizer, Spec

SPEC = Spec(
    name="tabular",
    title="Penguin species from four measurements",
    dataset="penguins",
    input_shape=(4,),
    layers=(Dense(16, activation="relu"), Dense(3)),
    optimizer=Optimizer("adam", learning_rate=1e-2),
    batch_size=16,
    epochs=40,
    metric="accuracy",
    target=0.95,
    seed=0,
    standardise=True,
    weights_sha256="fcd49deb9b296e8eedc192613d37d245d3af1afa2db44c067125bd3e4eaa0e05",
    notes={
        "preprocessing": "standardise each feature with the mean and standard deviation (ddof=0) "
                         "of the training split; the same numbers for validation and test",
        "loss": "softmax cross-entropy from the logits, averaged over the batch",
        "shuffling": "a fresh permutation of the training split every epoch",
    },
)
