"""Data-parallel training steps on several GPUs under gems, checked against ATen.

    torchrun --nproc_per_node 2 examples/ddp_step.py            # one process per GPU, NCCL
    torchrun --nproc_per_node 2 examples/ddp_step.py --hidden 4096 --steps 3
    python examples/ddp_step.py --own-device                    # one process, a model on cuda:1

With torchrun, every rank builds the same Llama-style model (examples/llama.py), wraps it in
DistributedDataParallel and trains it for a few AdamW steps on its own shard of a global batch,
once on ATen and once on gems. Each rank then checks that the gems run's losses, all-reduced
gradients and updated weights match the ATen run's within the dtype's tolerance, and that every
rank holds the same weights afterwards. Rank 0 prints the results and its coverage report; the
exit status is 0 only if every rank passed.

``--own-device`` runs in one process with the current device left at cuda:0 and the model on the
last GPU: gems must launch each kernel on its tensor's own device.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from dataclasses import replace

import llama
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flag_gems import coverage
from flag_gems.demo import TOLERANCE, compare_forward_backward, relative_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=4, help="sequences per rank")
    p.add_argument("--steps", type=int, default=3, help="AdamW steps on each side")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="bfloat16")
    p.add_argument("--own-device", action="store_true", help="one process: a model on the last GPU, not the current")
    return p


def _config(args) -> llama.LlamaConfig:
    heads = max(args.hidden // 128, 1)
    return replace(llama.LlamaConfig(), hidden=args.hidden, layers=args.layers, heads=heads,
                   kv_heads=max(heads // 4, 1), ffn=args.hidden * 8 // 3 // 64 * 64, seq=args.seq, batch=args.batch)


def _train(model: nn.Module, device: torch.device, tokens: torch.Tensor, steps: int):
    """``steps`` DDP steps; the global mean loss of each, the last step's gradients and the final weights."""
    ddp = DistributedDataParallel(model, device_ids=[device.index])
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = ddp(inputs)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()  # DDP all-reduces the gradients (mean over ranks) during backward
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        losses.append(mean.item() / dist.get_world_size())
    torch.cuda.synchronize(device)
    return losses, grads, {n: p.detach().clone() for n, p in model.named_parameters()}


def _same_on_every_rank(params: dict[str, torch.Tensor]) -> bool:
    for p in params.values():
        reference = p.clone()
        dist.broadcast(reference, src=0)
        if not torch.equal(p, reference):
            return False
    return True


def data_parallel(args) -> int:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", device_id=device)
    dtype = getattr(torch, args.dtype)
    config = _config(args)
    torch.manual_seed(0)  # the same weights on every rank
    model = llama.Llama(config).to(device=device, dtype=dtype)
    generator = torch.Generator().manual_seed(1 + rank)  # each rank its own shard of the global batch
    tokens = torch.randint(0, config.vocab, (config.batch, config.seq + 1), generator=generator).to(device)

    aten_losses, aten_grads, aten_params = _train(copy.deepcopy(model), device, tokens, args.steps)
    with coverage.collect() as report:
        gems_losses, gems_grads, gems_params = _train(copy.deepcopy(model), device, tokens, args.steps)

    tolerance = TOLERANCE[dtype]
    loss_error = max(abs(g - a) / abs(a) for a, g in zip(aten_losses, gems_losses))
    grad_error = max(relative_error(gems_grads[n], aten_grads[n]) for n in aten_grads)
    param_error = max(relative_error(gems_params[n], aten_params[n]) for n in aten_params)
    same = _same_on_every_rank(gems_params)
    ok = loss_error <= tolerance and grad_error <= tolerance and param_error <= tolerance and same
    passed = torch.tensor(int(ok), device=device)
    dist.all_reduce(passed, op=dist.ReduceOp.MIN)
    if rank == 0:
        print(f"DDP on {world} GPUs ({torch.cuda.get_device_name(device)}), Llama-style hidden {config.hidden}, "
              f"{config.layers} layers, {world} x {config.batch} sequences of {config.seq}, {args.dtype}")
        print(f"loss per step, ATen: {' '.join(f'{v:.4f}' for v in aten_losses)}")
        print(f"loss per step, gems: {' '.join(f'{v:.4f}' for v in gems_losses)}")
        print(f"rank 0 against ATen: loss {loss_error:.1e}, gradients {grad_error:.1e}, weights {param_error:.1e} "
              f"(tolerance {tolerance:.0e}); weights identical on every rank: {same}")
        print(f"every rank: {'OK' if passed.item() else 'MISMATCH'}")
        print(report.table())
    dist.destroy_process_group()
    return 0 if passed.item() else 1


def own_device(args) -> int:
    """A model on the last GPU while the current device stays cuda:0."""
    if torch.cuda.device_count() < 2:
        print("--own-device needs two GPUs", file=sys.stderr)
        return 2
    device = torch.device("cuda", torch.cuda.device_count() - 1)
    dtype = getattr(torch, args.dtype)
    config = _config(args)
    torch.manual_seed(0)
    model = llama.Llama(config).to(device=device, dtype=dtype)
    tokens = torch.randint(0, config.vocab, (config.batch, config.seq + 1), device=device)

    def run(m: nn.Module):
        logits = m(tokens[:, :-1])
        return logits, nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())

    check = compare_forward_backward(model, run)
    print(f"model on {device}, current device cuda:{torch.cuda.current_device()}: {check.summary()}")
    print(check.coverage.table())
    return 0 if check.ok else 1


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("needs CUDA GPUs", file=sys.stderr)
        return 2
    return own_device(args) if args.own_device else data_parallel(args)


if __name__ == "__main__":
    sys.exit(main())
