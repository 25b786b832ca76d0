"""The course's own deep-learning engine: tensors with automatic differentiation, and what is
built on them, written by the student notebook by notebook in Part 2.

The modules here are exported from the solution notebooks in solutions/02_engine/: the cells
marked `# export` are the engine's code, so the engine a student builds and the reference
engine that later notebooks import are the same code (`make export` writes the modules, and a
test fails when one differs from its notebook). Edit the notebooks, never the modules.

    scalar   Value: reverse-mode autodiff of single numbers, the idea at its smallest
    tensor   Tensor: arrays (NumPy, or CuPy on a GPU) with reverse-mode autodiff;
             no_grad, concatenate, stack
    nn       Module, Parameter and layers (Linear, Sequential, ReLU, Tanh, GELU, Dropout,
             LayerNorm), losses (cross_entropy, mse_loss) and initialisations
    training optimisers (SGD, Adam, AdamW), learning-rate schedules (CosineSchedule, StepLR)
             and data loading (Dataset, ArrayDataset, DataLoader, prefetch)
    conv     conv2d and max_pool2d on NCHW images (im2col: one matmul per convolution),
             and the layers Conv2d, MaxPool2d, Flatten; keep_freed_memory
    sequence Embedding, softmax, the recurrent cells RNNCell and LSTMCell, LSTM, and causal
             self-attention (causal_mask, causal_attention, CausalSelfAttention)
    graph    trace Tensor code into a static Graph, gradients as a graph transformation,
             passes (optimize) and compilation (compile_graph, Plan, jit)
    device   to_device (arrays, tensors and models between NumPy and CuPy), synchronize,
             time_it (honest timing), and the roofline: matmul_cost, elementwise_cost, roofline
"""

from gradschool.engine.conv import Conv2d, Flatten, MaxPool2d, conv2d, keep_freed_memory, max_pool2d
from gradschool.engine.device import (
    elementwise_cost,
    matmul_cost,
    roofline,
    synchronize,
    time_it,
    to_device,
)
from gradschool.engine.graph import Graph, Plan, Proxy, compile_graph, gradients, jit, optimize, trace
from gradschool.engine.nn import (
    GELU,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    Parameter,
    ReLU,
    Sequential,
    Tanh,
    cross_entropy,
    he_normal,
    mse_loss,
    xavier_uniform,
)
from gradschool.engine.scalar import Value
from gradschool.engine.sequence import (
    LSTM,
    CausalSelfAttention,
    Embedding,
    LSTMCell,
    RNNCell,
    causal_attention,
    causal_mask,
    softmax,
)
from gradschool.engine.tensor import Tensor, concatenate, no_grad, stack
from gradschool.engine.training import (
    SGD,
    Adam,
    AdamW,
    ArrayDataset,
    CosineSchedule,
    DataLoader,
    Dataset,
    StepLR,
    prefetch,
)

__all__ = ["Tensor", "Value", "concatenate", "no_grad", "stack",
           "GELU", "Dropout", "LayerNorm", "Linear", "Module", "Parameter", "ReLU", "Sequential",
           "Tanh", "cross_entropy", "he_normal", "mse_loss", "xavier_uniform"]
__all__ += ["SGD", "Adam", "AdamW", "ArrayDataset", "CosineSchedule", "DataLoader", "Dataset", "StepLR",
            "prefetch"]
__all__ += ["Conv2d", "Flatten", "MaxPool2d", "conv2d", "keep_freed_memory", "max_pool2d"]
__all__ += ["LSTM", "CausalSelfAttention", "Embedding", "LSTMCell", "RNNCell", "causal_attention",
            "causal_mask", "softmax"]
__all__ += ["elementwise_cost", "matmul_cost", "roofline", "synchronize", "time_it", "to_device"]
__all__ += ["Graph", "Plan", "Proxy", "compile_graph", "gradients", "jit", "optimize", "trace"]
