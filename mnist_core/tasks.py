"""The tutorial's task functions, defined once.

Plain runs call them directly; the lattice wraps these very functions in electrons.
Each task applies its own seed and torch thread count, because under Covalent it runs
in another process (a server pool worker or a Dask worker) whose settings we don't own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

from mnist_core.model import NeuralNetwork

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Something that wraps a task function without editing it (e.g. to time it).
TaskWrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when this process can see a GPU; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device here")
    return device


def data_loader(
    batch_size: int,
    train: bool,
    data_dir: str,
    subset: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    threads: int = 1,
) -> DataLoader:
    """MNIST data loader (the tutorial's: PIL image + ToTensor per sample)."""
    torch.set_num_threads(threads)
    data = datasets.MNIST(data_dir, train=train, download=False, transform=ToTensor())
    if subset is not None:
        if subset > len(data):
            raise ValueError(f"subset={subset} exceeds the {len(data)} samples in {data_dir}")
        data = Subset(data, range(subset))
    # A seeded generator travels with the loader, so the shuffle order is the same in
    # whichever process iterates it.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)


def get_optimizer(
    model: NeuralNetwork, learning_rate: float, momentum: float
) -> torch.optim.Optimizer:
    """Get Stochastic Gradient Descent optimizer."""
    return torch.optim.SGD(model.parameters(), learning_rate, momentum)


def train_over_one_epoch(
    dataloader: DataLoader,
    model: NeuralNetwork,
    optimizer: torch.optim.Optimizer,
    log_interval: int,
    epoch: int,
    loss_fn: LossFn,
    train_losses: list[float],
    train_counter: list[int],
    device: str = "cpu",
) -> tuple[NeuralNetwork, torch.optim.Optimizer]:
    """Train neural network model over one epoch."""
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if batch % log_interval == 0:
            loss, current = loss.item(), batch * dataloader.batch_size
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")
            train_losses.append(loss)
            train_counter.append(current + (epoch - 1) * size)

    return model, optimizer


def train_model(
    train_dataloader: DataLoader,
    model: NeuralNetwork,
    learning_rate: float,
    momentum: float,
    epochs: int,
    log_interval: int,
    loss_fn: LossFn = F.nll_loss,
    seed: int = 0,
    threads: int = 1,
    device: str = "cpu",
) -> tuple[NeuralNetwork, torch.optim.Optimizer, dict]:
    """Train over several epochs; returns the model, optimizer and the loss history.

    The tutorial appends to lists passed in; across Covalent tasks such mutations are lost,
    so the history is returned instead.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)  # dropout draws from the global RNG
    device = resolve_device(device)
    model = model.to(device)
    optimizer = get_optimizer(model, learning_rate, momentum)
    train_losses: list[float] = []
    train_counter: list[int] = []
    for epoch in range(1, epochs + 1):
        print(f"Epoch {epoch}\n-------------------------------")
        model, optimizer = train_over_one_epoch(
            dataloader=train_dataloader,
            model=model,
            optimizer=optimizer,
            log_interval=log_interval,
            epoch=epoch,
            loss_fn=loss_fn,
            train_losses=train_losses,
            train_counter=train_counter,
            device=device,
        )
    history = {
        "train_losses": train_losses,
        "train_counter": train_counter,
        "threads": torch.get_num_threads(),
        "device": device,
    }
    return model.to("cpu"), optimizer, history


def test(
    dataloader: DataLoader,
    model: NeuralNetwork,
    loss_fn: LossFn = F.nll_loss,
    threads: int = 1,
    device: str = "cpu",
) -> tuple[float, float]:
    """Test the model performance; returns (accuracy in %, average loss)."""
    torch.set_num_threads(threads)
    device = resolve_device(device)
    model = model.to(device)
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0.0, 0.0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    accuracy = 100 * correct
    print(f"Test Error: \n Accuracy: {(accuracy):>0.1f}%, Avg loss: {test_loss:>8f} \n")
    return accuracy, test_loss
