"""Recycled batch buffers (data/buffers.py): reused only once nothing else holds them."""

import torch

from yingshe.data.buffers import BufferRing


def test_a_released_buffer_is_recycled():
    ring = BufferRing(2)
    first = ring.take((4, 3, 8, 8))
    pointer = first.data_ptr()
    del first
    second = ring.take((4, 3, 8, 8))
    assert second.data_ptr() == pointer and ring.recycled == 1


def test_a_held_batch_is_never_handed_out_again():
    ring = BufferRing(2)
    held = [ring.take((2, 5)) for _ in range(3)]  # more than the ring holds: all distinct memory
    for i, batch in enumerate(held):
        batch.fill_(i)
    newer = ring.take((2, 5))
    newer.fill_(99)
    assert [float(b[0, 0]) for b in held] == [0.0, 1.0, 2.0]  # none was overwritten
    assert len({b.data_ptr() for b in [*held, newer]}) == 4 and ring.recycled == 0


def test_views_and_autograd_keep_a_buffer_busy():
    ring = BufferRing(1)
    batch = ring.take((3, 4))
    pointer = batch.data_ptr()
    part = batch[1:]  # a view the consumer kept
    del batch
    assert ring.take((3, 4)).data_ptr() != pointer
    del part
    ring = BufferRing(2)  # room for the fresh buffer taken while the first is busy
    inputs = ring.take((3, 4)).fill_(1.0)
    weight = torch.ones(4, requires_grad=True)
    loss = (inputs * weight).sum()  # autograd saves `inputs` for weight's gradient
    pointer = inputs.data_ptr()
    del inputs
    assert ring.take((3, 4)).data_ptr() != pointer  # saved for backward: still busy
    loss.backward()
    assert torch.equal(weight.grad, torch.full((4,), 3.0))  # computed from the untouched batch
    del loss
    assert ring.take((3, 4)).data_ptr() == pointer  # graph gone: recycled


def test_a_smaller_request_reuses_a_larger_buffer():
    ring = BufferRing(1)
    big = ring.take((6, 4))
    pointer = big.data_ptr()
    del big
    small = ring.take((5, 4))
    assert small.shape == (5, 4) and small.is_contiguous() and small.data_ptr() == pointer
