"""Recurrent layers: nn.LSTM, nn.GRU and nn.RNN as torch.export records them (aten.lstm / gru / rnn_*.input).

Each op takes the whole stack: the input sequence, the initial state(s), the flat weight list (per layer and
direction: w_ih, w_hh, then b_ih, b_hh when ``has_biases``, then w_hr for an LSTM with ``proj_size``),
``has_biases, num_layers, dropout, train, bidirectional, batch_first``. It is rebuilt here as one
``jax.lax.scan`` over time per layer and direction, with torch's gate order (LSTM: i, f, g, o; GRU: r, z, n)
and only matmuls, sums, products, sigmoid and tanh, so that the DeepLIFT side (which unrolls scans) sees
ordinary primitives. Packed sequences (the ``.data`` overloads) are not supported.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from converters.registry import register


def _linear(x, weight, bias):
    y = jnp.matmul(x, weight.T)
    return y if bias is None else y + bias


def _split_weights(params, has_biases: bool):
    """(w_ih, w_hh, b_ih, b_hh, w_hr) for one layer and direction; missing entries are None."""
    w_ih, w_hh, *rest = params
    b_ih = b_hh = w_hr = None
    if has_biases:
        b_ih, b_hh, *rest = rest
    if rest:
        (w_hr,) = rest
    return w_ih, w_hh, b_ih, b_hh, w_hr


# One direction of one layer is a jitted function of its weights (nothing closed over), so that repeated calls
# with the same shapes reuse one compiled scan instead of compiling it again at every eager call. The jit is a
# call primitive that jaxpr consumers inline.


@functools.partial(jax.jit, static_argnames="reverse")
def _lstm_direction(x, state, weights, *, reverse: bool):
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    input_gates = _linear(x, w_ih, b_ih)  # (T, B, 4H), all steps at once as torch does

    def step(carry, gates_x):
        h, c = carry
        gates = gates_x + _linear(h, w_hh, b_hh)
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        if w_hr is not None:
            h = jnp.matmul(h, w_hr.T)
        return (h, c), h

    (h, c), outputs = jax.lax.scan(step, state, input_gates, reverse=reverse)
    return outputs, (h, c)


@functools.partial(jax.jit, static_argnames="reverse")
def _gru_direction(x, h0, weights, *, reverse: bool):
    w_ih, w_hh, b_ih, b_hh, _ = weights
    input_gates = _linear(x, w_ih, b_ih)  # (T, B, 3H)

    def step(h, gates_x):
        i_r, i_z, i_n = jnp.split(gates_x, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(_linear(h, w_hh, b_hh), 3, axis=-1)
        r = jax.nn.sigmoid(i_r + h_r)
        z = jax.nn.sigmoid(i_z + h_z)
        n = jnp.tanh(i_n + r * h_n)
        h = (h - n) * z + n  # torch's form of (1 - z) * n + z * h
        return h, h

    h, outputs = jax.lax.scan(step, h0, input_gates, reverse=reverse)
    return outputs, h


def _elman_direction(nonlinearity):
    @functools.partial(jax.jit, static_argnames="reverse")
    def run(x, h0, weights, *, reverse: bool):
        w_ih, w_hh, b_ih, b_hh, _ = weights
        input_part = _linear(x, w_ih, b_ih)

        def step(h, x_part):
            h = nonlinearity(x_part + _linear(h, w_hh, b_hh))
            return h, h

        h, outputs = jax.lax.scan(step, h0, input_part, reverse=reverse)
        return outputs, h

    return run


def _stack(direction_fn, x, states, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    """Run every layer and direction. ``states``: per (layer, direction) index, the initial carry."""
    if train and dropout > 0:
        raise ValueError("recurrent dropout in training mode cannot be explained: put the model in eval mode")
    if x.ndim != 3:
        raise ValueError(f"recurrent layer input of shape {x.shape}: expected 3 axes (sequence, batch, features)")
    directions = 2 if bidirectional else 1
    per = len(params) // (num_layers * directions)
    if per * num_layers * directions != len(params):
        raise ValueError(f"{len(params)} recurrent weights do not split over {num_layers} layer(s) x {directions}")
    sequence = jnp.swapaxes(x, 0, 1) if batch_first else x  # (T, B, F)
    finals = []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            weights = _split_weights(params[index * per : (index + 1) * per], has_biases)
            out, final = direction_fn(sequence, states(index), weights, reverse=direction == 1)
            outputs.append(out)
            finals.append(final)
        sequence = outputs[0] if directions == 1 else jnp.concatenate(outputs, axis=-1)
    output = jnp.swapaxes(sequence, 0, 1) if batch_first else sequence
    return output, finals


@register("aten.lstm.input")
def lstm(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    h0, c0 = hx  # (layers * directions, B, H_out), (layers * directions, B, H)
    output, finals = _stack(
        _lstm_direction,
        x,
        lambda i: (h0[i], c0[i]),
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
    )
    h_n = jnp.stack([h for h, _ in finals])
    c_n = jnp.stack([c for _, c in finals])
    return output, h_n, c_n


def _single_state_op(direction_fn):
    def op(x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        output, finals = _stack(
            direction_fn,
            x,
            lambda i: hx[i],
            params,
            has_biases,
            num_layers,
            dropout,
            train,
            bidirectional,
            batch_first,
        )
        return output, jnp.stack(finals)

    return op


gru = register("aten.gru.input")(_single_state_op(_gru_direction))
rnn_tanh = register("aten.rnn_tanh.input")(_single_state_op(_elman_direction(jnp.tanh)))
rnn_relu = register("aten.rnn_relu.input")(_single_state_op(_elman_direction(jax.nn.relu)))
