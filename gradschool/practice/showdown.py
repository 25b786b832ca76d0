"""The framework showdown: the classic comparison table of the course's engine, PyTorch, Keras and
JAX re-made from figures measured on one project (the image CNN of Part 3, same spec, same
initial weights, same first-batch loss), each framework in its own process so that one kernel
never holds three frameworks at once.

A measuring process runs `measure(framework, project, epochs)` (started as
`python -c "from gradschool.practice.showdown import child_main; child_main()" FRAMEWORK PROJECT
EPOCHS`) and prints one line, `SHOWDOWN-RESULT {json}`: import time, every epoch's seconds (the
first with the warm-up, tracing or compilation), the first-batch loss and its gradients' distance
from the spec's reference, test accuracy, prediction time, the process's peak resident memory,
lines of code of the Part 3 module, and which export paths write a file that reads back with the
same predictions.

On the notebook's side: `run_child` (a subprocess with a timeout, stderr kept for the error),
`parse_result` (the last result line, validated against SCHEMA), `measure_all` (groups of
processes at a time), `same_problem` (every framework solved the same problem), `epoch_stats`
(the median epoch after the first, and the first epoch's extra), `compare` (ratios to the best
and competition ranks), `measured_table` and `ROWS` (the rows that cannot be measured here,
each with the kind of evidence that would settle it).

Generated from solutions/12_showdown/showdown.ipynb by `make export`:
edit the notebook, not this file.
"""

import importlib
import inspect
import json
import math
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import gradschool
from gradschool.engine.device import time_it
from gradschool.projects.report import code_lines


def peak_rss_mb():
    """This process's peak resident memory so far, in MB (ru_maxrss: KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def first_line(error):
    """`Type: first line of the message` of an exception, without terminal colour codes."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    return f"{type(error).__name__}: {message.splitlines()[0] if message else ''}"


def lines_of_code(module):
    """{name: code_lines} for every function and class the module itself defines (not those it
    imports), in source order."""
    own = [(name, obj) for name, obj in vars(module).items()
           if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__]
    return {name: code_lines(obj) for name, obj in own}


FRAMEWORKS = ("engine", "torch", "keras", "jax")
MARK = "SHOWDOWN-RESULT "  # the line a measuring process prints its JSON on
CONTRACT = ("build_model", "set_weights", "get_weights", "train", "evaluate", "save", "load")
NUMBER = "number"  # in SCHEMA: an int or a float, finite, and not a bool
SCHEMA = {"framework": str, "project": str, "device": str, "threads": int, "epochs": int,
          "import_seconds": NUMBER, "first_loss": NUMBER, "gradient_error": NUMBER,
          "epoch_seconds": list, "test_accuracy": NUMBER, "predict_seconds": NUMBER,
          "peak_rss_train_mb": NUMBER, "peak_rss_mb": NUMBER, "exports": dict, "lines": dict}


def _size(path):
    """Bytes of a file, or of every file under a folder."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _export_paths(framework, module, model, folder):
    """{name: (write(), read(x) -> predicted classes)} for the framework's own save/export calls."""
    folder = Path(folder)
    if framework == "engine":
        return {"npz (np.savez)": (lambda: module.save(model, folder / "model.npz"),
                                   lambda x: module._predict(module.load(folder / "model.npz"), x))}
    if framework == "torch":
        import torch

        def nchw(x):  # the torch module's convolutions take (n, c, h, w)
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x)
            return torch.as_tensor(x, device=next(model.parameters()).device)

        def onnx_read(x):
            import onnxruntime

            session = onnxruntime.InferenceSession(str(folder / "model.onnx"),
                                                   providers=["CPUExecutionProvider"])
            feed = {session.get_inputs()[0].name: nchw(x).cpu().numpy()}
            return session.run(None, feed)[0].argmax(axis=1)

        model.eval()
        sample = folder / "sample.npy"  # the example input the exports are traced with
        return {
            "state_dict (torch.save)": (lambda: module.save(model, folder / "model.pt"),
                                        lambda x: module._predict(module.load(folder / "model.pt"), x)),
            "torch.export (.pt2)": (
                lambda: torch.export.save(torch.export.export(model, (nchw(np.load(sample)),)),
                                          folder / "model.pt2"),
                lambda x: torch.export.load(folder / "model.pt2").module()(nchw(x)).argmax(1).cpu().numpy()),
            "ONNX (torch.onnx.export)": (
                lambda: torch.onnx.export(model, (nchw(np.load(sample)),), folder / "model.onnx",
                                          dynamo=True, verbose=False),
                onnx_read),
        }
    if framework == "keras":
        import tensorflow as tf

        def onnx_read(x):
            import onnxruntime

            session = onnxruntime.InferenceSession(str(folder / "model.onnx"),
                                                   providers=["CPUExecutionProvider"])
            return session.run(None, {session.get_inputs()[0].name: x})[0].argmax(axis=1)

        def saved_model_read(x):
            loaded = tf.saved_model.load(str(folder / "saved_model"))  # keep it: its variables live in it
            return loaded.serve(x).numpy().argmax(axis=1)

        return {
            ".keras (model.save)": (lambda: module.save(model, folder / "model.keras"),
                                    lambda x: module._predict(module.load(folder / "model.keras"), x)),
            "SavedModel (model.export)": (
                lambda: model.export(folder / "saved_model", format="tf_saved_model", verbose=False),
                saved_model_read),
            "ONNX (model.export)": (
                lambda: model.export(folder / "model.onnx", format="onnx", verbose=False), onnx_read),
        }
    if framework == "jax":
        import jax
        from flax import nnx

        def jax_write():
            graphdef, state = nnx.split(model)
            forward = jax.jit(lambda x: nnx.merge(graphdef, state)(x))  # the weights become constants
            sample = np.load(folder / "sample.npy")
            exported = jax.export.export(forward)(jax.ShapeDtypeStruct(sample.shape, sample.dtype))
            (folder / "model.jax").write_bytes(exported.serialize())

        def jax_read(x):
            exported = jax.export.deserialize(bytearray((folder / "model.jax").read_bytes()))
            return np.asarray(exported.call(x)).argmax(axis=1)

        return {"msgpack (flax.serialization)": (
                    lambda: module.save(model, folder / "model.msgpack"),
                    lambda x: module._predict(module.load(folder / "model.msgpack"), x)),
                "jax.export (StableHLO)": (jax_write, jax_read)}
    raise ValueError(f"no export paths for {framework!r}; the frameworks are {FRAMEWORKS}")


def try_exports(framework, module, model, x, folder):
    """Try each of the framework's export paths on `model`: write it into `folder`, read it back,
    predict `x` (a batch of inputs). {name: {"ok", "agree", "bytes", "seconds", "error"}}: ok when
    the file was written, read back, and agrees with the model's own predictions on at least 99 %
    of x; error is the first line of what went wrong ("" when ok)."""
    np.save(Path(folder) / "sample.npy", x)
    expected = np.asarray(module._predict(model, x))
    outcomes = {}
    for name, (write, read) in _export_paths(framework, module, model, folder).items():
        start = time.perf_counter()
        outcome = {"ok": False, "agree": 0.0, "bytes": 0, "seconds": 0.0, "error": ""}
        try:
            before = set(Path(folder).iterdir())
            write()
            written = set(Path(folder).iterdir()) - before
            outcome["bytes"] = sum(_size(path) for path in written)
            outcome["agree"] = float(np.mean(np.asarray(read(x)) == expected))
            outcome["ok"] = outcome["agree"] >= 0.99
            if not outcome["ok"]:
                outcome["error"] = f"read back, but its predictions agree on {outcome['agree']:.1%} only"
        except Exception as error:  # every failure is a finding: record it and go on
            outcome["error"] = first_line(error)
        outcome["seconds"] = time.perf_counter() - start
        outcomes[name] = outcome
    return outcomes


def _device_name(module):
    """Where the module computes: its _device() (torch, keras, jax) or its array module (engine)."""
    if hasattr(module, "_device"):
        return str(module._device())
    return f"{module._xp().__name__} (CPU)" if module._xp().__name__ == "numpy" else module._xp().__name__


def measure(framework, project="images", epochs=3):
    """Measure one framework on one project in this process (meant to be a fresh one): the figures
    of SCHEMA, as a dict of JSON-ready values."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {FRAMEWORKS}")
    start = time.perf_counter()
    module = importlib.import_module(f"gradschool.projects.{project}_{framework}")
    import_seconds = time.perf_counter() - start
    spec = module.SPEC
    loss, gradients = module.first_batch_loss_and_gradients()
    reference = spec.reference()
    gradient_error = max(float(np.max(np.abs(np.asarray(gradients[name], dtype=np.float64) - value)))
                         for name, value in reference.gradients.items())
    model = module.build_model()
    module.set_weights(model, spec.initial_weights())
    history = module.train(model, epochs=epochs)
    peak_train = peak_rss_mb()
    x_test, y_test = spec.prepare()["test"]
    accuracy = module.evaluate(model, x_test, y_test)  # also the warm-up of the timing below
    predict = statistics.median(time_it(lambda: module.evaluate(model, x_test, y_test), warmup=0, repeat=3))
    with tempfile.TemporaryDirectory() as folder:
        exports = try_exports(framework, module, model, x_test[:256], folder)
    return {"framework": framework, "project": project, "device": _device_name(module),
            "threads": int(os.environ.get("OMP_NUM_THREADS", "0")), "epochs": len(history["seconds"]),
            "import_seconds": import_seconds, "first_loss": float(loss), "gradient_error": gradient_error,
            "epoch_seconds": [float(s) for s in history["seconds"]], "test_accuracy": float(accuracy),
            "predict_seconds": float(predict), "peak_rss_train_mb": peak_train, "peak_rss_mb": peak_rss_mb(),
            "exports": exports, "lines": lines_of_code(module)}


def child_main(argv=None):
    """The measuring process's entry point: argv = [framework, project, epochs]; prints MARK + JSON
    as its last line of output."""
    framework, project, epochs = (sys.argv[1:] if argv is None else argv)
    result = measure(framework, project, int(epochs))
    print(MARK + json.dumps(result), flush=True)


def course_root():
    """The folder that holds the `gradschool` package (a child must be able to import it)."""
    return str(Path(gradschool.__file__).resolve().parent.parent)


def child_command(framework, project="images", epochs=3):
    """The command line of one measuring process: this Python, `-c`, and child_main's arguments."""
    code = "from gradschool.practice.showdown import child_main; child_main()"
    return [sys.executable, "-c", code, framework, project, str(epochs)]


def child_environment(device="cpu", threads=1):
    """A copy of this process's environment for a measuring process: the course importable, the
    device asked for (GRADSCHOOL_DEVICE), every framework's thread pools limited to `threads`,
    TensorFlow's start-up chatter silenced and JAX not grabbing most of a GPU's memory."""
    env = dict(os.environ)
    path = [course_root()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env.update({"PYTHONPATH": os.pathsep.join(path), "GRADSCHOOL_DEVICE": device,
                "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "OPENBLAS_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
                "TF_NUM_INTEROP_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2",
                "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}",
                "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "KERAS_BACKEND": "tensorflow"})
    return env


class ChildError(RuntimeError):
    """A measuring process that crashed, timed out or printed no valid result."""


def tail(text, lines=15):
    """The last `lines` lines of `text` (str or bytes, or None), for an error message."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = (text or "").rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(nothing)"


def run_child(command, *, timeout, env=None):
    """Run `command`; its stdout when it exits with status 0, else ChildError (exit status or
    timeout, and the end of its stderr)."""
    name = " ".join(str(part) for part in command[-3:])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as error:  # run() has killed the child and waited for it
        raise ChildError(f"the child [{name}] timed out after {timeout} s and was killed; "
                         f"the end of its stderr:\n{tail(error.stderr)}") from None
    if done.returncode != 0:
        raise ChildError(f"the child [{name}] exited with status {done.returncode}; "
                         f"the end of its stderr:\n{tail(done.stderr)}")
    return done.stdout


def parse_result(stdout, framework):
    """The dict on the last MARK line of a measuring process's stdout, checked against SCHEMA;
    ValueError naming what is missing or wrong."""
    lines = [line[len(MARK):] for line in stdout.splitlines() if line.startswith(MARK)]
    if not lines:
        raise ValueError(f"the {framework} child printed no line starting with {MARK!r}; "
                         f"the end of its output:\n{tail(stdout)}")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError as error:
        raise ValueError(f"the {framework} child's result is not valid JSON ({error}); "
                         f"the end of its output:\n{tail(stdout)}") from None
    if not isinstance(result, dict):
        raise ValueError(f"the {framework} child's result should be a JSON object, "
                         f"got {type(result).__name__}")
    for key, kind in SCHEMA.items():
        if key not in result:
            raise ValueError(f"the {framework} child's result has no {key!r}")
        value = result[key]
        if kind == NUMBER:
            good = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            good = isinstance(value, kind)
        if not good:
            expected = "a finite number" if kind == NUMBER else kind.__name__
            raise ValueError(f"the {framework} child's {key!r} is {value!r}; expected {expected}")
    if result["framework"] != framework:
        raise ValueError(f"asked the {framework} child, its result is for {result['framework']!r}")
    return result


def measure_all(groups, project="images", epochs=3, device="cpu", threads=1, timeout=300):
    """Run one measuring process per framework, the processes of each group at the same time and
    the groups one after the other; {framework: parse_result of its output}."""
    env = child_environment(device, threads)

    def one(framework):
        stdout = run_child(child_command(framework, project, epochs), timeout=timeout, env=env)
        try:
            return parse_result(stdout, framework)
        except ValueError as error:
            raise ChildError(str(error)) from None

    results = {}
    for group in groups:
        with ThreadPoolExecutor(max_workers=len(group)) as pool:
            for framework, result in zip(group, pool.map(one, group), strict=True):
                results[framework] = result
    return results


def same_problem(results, reference_loss, tolerance=1e-4):
    """{framework: |first_loss - reference_loss|}; AssertionError naming every framework whose loss
    or gradient_error is not within tolerance."""
    differences = {framework: abs(float(result["first_loss"]) - float(reference_loss))
                   for framework, result in results.items()}
    off = [f"{framework} (first-batch loss {results[framework]['first_loss']:.6f}, "
           f"gradients {results[framework]['gradient_error']:.1e} from the reference)"
           for framework, difference in differences.items()
           if not (difference <= tolerance and float(results[framework]["gradient_error"]) <= tolerance)]
    if off:
        raise AssertionError(f"not the same problem: the reference loss is {reference_loss:.6f}, and "
                             f"{', '.join(off)} differ by more than {tolerance}")
    return differences


def epoch_stats(seconds):
    """{"per_epoch": median of the epochs after the first, "first_extra": the first minus it,
    "spread": (max - min) / median of those epochs}; ValueError for < 2 epochs or a bad value."""
    values = list(seconds)
    if len(values) < 2:
        raise ValueError(f"need at least two epochs (the first and one to time), got {len(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"epoch durations must be finite numbers of seconds > 0, got {value!r}")
    later = [float(value) for value in values[1:]]
    per_epoch = statistics.median(later)
    return {"per_epoch": float(per_epoch), "first_extra": float(values[0]) - per_epoch,
            "spread": (max(later) - min(later)) / per_epoch}


def compare(values, higher_is_better=False):
    """{name: {"value", "ratio" (times worse than the best, >= 1), "rank" (1 + how many are
    strictly better)}}; ValueError for no values or a value that is not finite and > 0."""
    if not values:
        raise ValueError("nothing to compare")
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name}: {value!r} is not a finite number > 0")
    best = max(values.values()) if higher_is_better else min(values.values())
    table = {}
    for name, value in values.items():
        ratio = best / value if higher_is_better else value / best
        better = sum(1 for other in values.values() if (other > value if higher_is_better else other < value))
        table[name] = {"value": float(value), "ratio": float(ratio), "rank": 1 + better}
    return table


def export_count(result):
    """How many of the framework's export paths wrote a file that read back with the same predictions."""
    return sum(outcome["ok"] for outcome in result["exports"].values())


def measured_rows(results):
    """[(row, unit, higher_is_better, {framework: value})] for the rows measured by the children."""
    stats = {f: epoch_stats(r["epoch_seconds"]) for f, r in results.items()}

    def each(figure):
        return {framework: figure(framework, result) for framework, result in results.items()}

    return [
        ("training time per epoch (median after the first)", "s", False,
         each(lambda f, r: stats[f]["per_epoch"])),
        ("first epoch's extra (warm-up, tracing, compilation)", "s", False,
         each(lambda f, r: max(stats[f]["first_extra"], 0.1))),
        ("import time", "s", False, each(lambda f, r: r["import_seconds"])),
        ("prediction time, 1500 test images", "s", False, each(lambda f, r: r["predict_seconds"])),
        ("peak memory of the process (training)", "MB", False, each(lambda f, r: r["peak_rss_train_mb"])),
        ("test accuracy after the same epochs", "", True, each(lambda f, r: r["test_accuracy"])),
        ("lines of code of the module", "lines", False, each(lambda f, r: sum(r["lines"].values()))),
        ("export paths that read back", "paths", True, each(lambda f, r: max(export_count(r), 0.5))),
    ]


def measured_table(results):
    """{row: {framework: "value unit (ratio×, #rank)", "better": "lower" or "higher"}} from measured_rows."""
    table = {}
    for row, unit, higher, values in measured_rows(results):
        cells = {}
        for framework, cell in compare(values, higher_is_better=higher).items():
            value = cell["value"]
            text = f"{value:.3g}" if unit not in ("lines", "paths") else f"{value:.0f}"
            cells[framework] = f"{text} {unit} ({cell['ratio']:.1f}×, #{cell['rank']})".replace("  ", " ")
        cells["better"] = "higher" if higher else "lower"
        table[row] = cells
    return table


ROWS = {
    "programming style": {
        "status": "read from the code here",
        "engine": "imperative, eager (NumPy)",
        "torch": "imperative, eager (define-by-run)",
        "keras": "declarative layers, compile + fit",
        "jax": "functional: pure functions transformed (grad, jit)",
        "evidence": "the four Part 3 modules (gradschool/projects/images_*.py)"},
    "computational graph": {
        "status": "read from the code here; its cost measured",
        "engine": "dynamic tape per step",
        "torch": "dynamic (torch.compile optional)",
        "keras": "traced once by tf.function, then static",
        "jax": "traced and compiled by jax.jit, static shapes",
        "evidence": "the first epoch's extra above; 07_compile for retrace counts"},
    "training speed": {
        "status": "measured here",
        "evidence": "time per epoch above: one CPU thread, this model; a GPU or another model "
                    "can change the order"},
    "memory": {
        "status": "measured here",
        "evidence": "peak resident memory above (CPU; GPU memory not included)"},
    "production deployment (serving, ONNX)": {
        "status": "partly measured here",
        "evidence": "export paths above (written and read back); serving throughput, mobile and "
                    "browser runtimes not run here: the runtimes' documentation and benchmarks"},
    "mobile support": {
        "status": "not measured here",
        "evidence": "run on the target devices; the vendors' runtime documentation (ExecuTorch, "
                    "LiteRT/TFLite) and on-device benchmarks"},
    "debugging experience": {
        "status": "not measured here",
        "evidence": "a user study or your own log of time-to-fix; what can be shown: 11_debug "
                    "(where a print or breakpoint runs: eagerly, or once at trace time)"},
    "ease of learning": {
        "status": "not measured here",
        "evidence": "user studies and surveys; lines of code above are a weak proxy"},
    "community and resources": {
        "status": "not measured here",
        "evidence": "public, dated statistics: papers citing each framework, package downloads, "
                    "repository activity; they change yearly"},
    "flexibility for research": {
        "status": "not measured here",
        "evidence": "which transformations exist (higher-order grad, vmap, custom kernels: the "
                    "documentation) and what recent papers' code uses"},
    "how Pythonic it feels": {
        "status": "opinion",
        "evidence": "no measurement settles it; lines of code, and whether plain Python control "
                    "flow runs inside the step, are facts near it"},
    "accelerator support (GPU, TPU)": {
        "status": "not measured on this CPU",
        "evidence": "the frameworks' installation matrices; the same notebook on a GPU machine "
                    "measures the GPU row"},
}


def showdown_table(results):
    """The full table: every row of ROWS with its status and evidence, and for the rows measured here
    the cells of measured_table."""
    measured = measured_table(results)
    where = {"training speed": "training time per epoch (median after the first)",
             "memory": "peak memory of the process (training)",
             "production deployment (serving, ONNX)": "export paths that read back"}
    table = {}
    for row, facts in ROWS.items():
        cells = {framework: facts.get(framework, facts["status"]) for framework in results}
        if row in where:
            cells.update({framework: measured[where[row]][framework] for framework in results})
        table[row] = {**cells, "status": facts["status"], "evidence": facts["evidence"]}
    return table
